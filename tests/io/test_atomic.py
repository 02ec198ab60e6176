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
    assert "--force" in (caught.value.hint or "")
    check_output_path(existing, force=True)
