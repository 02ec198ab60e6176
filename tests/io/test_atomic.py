import subprocess
import sys
import textwrap

import pytest

from patchkit.errors import OutputError
from patchkit.io.atomic import atomic_path, check_output_path, write_bytes_atomic


def test_write_replaces_in_one_step(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_exception_leaves_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_folder_output_is_atomic_too(tmp_path):
    target = tmp_path / "folder"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("newer")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_killed_process_leaves_no_output(tmp_path):
    """A real SIGKILL in the middle of a write: the target must not appear."""
    target = tmp_path / "out.bin"
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from patchkit.io.atomic import atomic_path
        with atomic_path(Path({str(target)!r})) as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    assert not target.exists()


def test_output_checks(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.png")
    existing = tmp_path / "x.png"
    existing.write_bytes(b"")
    with pytest.raises(OutputError, match="already exists") as caught:
        check_output_path(existing)
    assert "--overwrite" in (caught.value.hint or "")
    check_output_path(existing, force=True)


def _folder_writer(target, label: str, files: int = 40) -> str:
    """Python source for a process that writes `target` as a folder of `files` files naming `label`."""
    return textwrap.dedent(
        f"""
        from pathlib import Path
        from patchkit.io.atomic import atomic_path
        for round in range(4):
            with atomic_path(Path({str(target)!r})) as tmp:
                tmp.mkdir()
                for i in range({files}):
                    (tmp / f"{{i}}.txt").write_text({label!r})
        """
    )


def test_concurrent_folder_overwrites_serialise_and_leave_one_whole_folder(tmp_path):
    """Six real processes overwrite one folder at once: every run succeeds, one writer's folder wins whole."""
    target = tmp_path / "out"
    writers = [
        subprocess.Popen([sys.executable, "-c", _folder_writer(target, f"writer-{n}")], stderr=subprocess.PIPE)
        for n in range(6)
    ]
    failures = [w.stderr.read().decode() for w in writers if w.wait() != 0]  # type: ignore[union-attr]
    assert failures == []
    contents = {p.read_text() for p in target.iterdir()}
    assert len(contents) == 1 and len(list(target.iterdir())) == 40
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _killed_during(target, step: str, *, exchange: bool) -> subprocess.CompletedProcess:
    """Overwrite the folder `target` in a child that SIGKILLs itself at `step` of the swap."""
    code = textwrap.dedent(
        f"""
        import os, shutil, signal
        from pathlib import Path
        from patchkit.io import folder_swap
        from patchkit.io.atomic import atomic_path
        if not {exchange!r}:
            folder_swap._exchange = lambda a, b: False
        renames = []
        real_replace = os.replace
        def replace(src, dst):
            renames.append(dst)
            if {step!r} == "after-park" and len(renames) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        def rmtree(path, ignore_errors=False):
            if {step!r} == "removing-old":
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        shutil.rmtree = rmtree
        with atomic_path(Path({str(target)!r})) as tmp:
            tmp.mkdir()
            (tmp / "version.txt").write_text("new")
        """
    )
    return subprocess.run([sys.executable, "-c", code], check=False)


def _old_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "version.txt").write_text("old")
    return target


def test_kill_while_removing_the_old_folder_leaves_the_new_one_and_the_next_writer_sweeps(tmp_path):
    target = _old_folder(tmp_path)
    assert _killed_during(target, "removing-old", exchange=True).returncode == -9
    assert (target / "version.txt").read_text() == "new"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "version.txt").write_text("newer")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "version.txt").read_text() == "newer"


def test_kill_between_renames_without_exchange_is_rolled_forward_by_the_next_writer(tmp_path):
    """The three-rename fallback: a SIGKILL after parking the old folder leaves a journal the next run reads."""
    target = _old_folder(tmp_path)
    assert _killed_during(target, "after-park", exchange=False).returncode == -9
    assert not target.exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n.split("-")[0] for n in names] == [".out.new", ".out.old"]
    # Any later writer of the folder first finishes the dead writer's swap, under the lock.
    from patchkit.io.folder_swap import recover_interrupted_swaps, writer_lock

    with writer_lock(tmp_path):
        recover_interrupted_swaps(target)
    assert (target / "version.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_fallback_swap_replaces_a_folder(tmp_path):
    from patchkit.io.folder_swap import swap_into_place

    target = _old_folder(tmp_path)
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "version.txt").write_text("new")
    swap_into_place(staged, target, allow_exchange=False)
    assert (target / "version.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_cannot_be_synced_after_the_rename_says_the_output_is_there(tmp_path, monkeypatch):
    """A disk error cannot be caused on demand, so fsync of the folder is made to fail as EIO does."""
    import errno

    from patchkit.io import atomic

    def failing_fsync(folder):
        raise OSError(errno.EIO, "Input/output error", str(folder))

    monkeypatch.setattr(atomic, "fsync_dir", failing_fsync)
    target = tmp_path / "out.bin"
    with pytest.raises(OutputError, match="was written, but its folder could not be synced") as caught:
        write_bytes_atomic(target, b"data")
    assert target.read_bytes() == b"data"
    assert "power loss" in (caught.value.hint or "")
