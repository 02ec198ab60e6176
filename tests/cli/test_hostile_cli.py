"""Hostile names and failing disks through a real `patchkit` process: one `error:` line, a `hint:`,
the documented exit code, no traceback, and nothing left behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from patchkit.services.fixtures import synthetic_patch


def _patchkit(*args: str, preexec=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchkit", *args], capture_output=True, text=True, preexec_fn=preexec, timeout=300
    )


def _refused(run: subprocess.CompletedProcess[str], code: int) -> list[str]:
    assert run.returncode == code, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ") and len(lines) == 2, lines
    return lines


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("x[/]y.safetensors", "x[/]y.safetensors"),  # rich markup: would crash with a MarkupError
        ("[bold red]BIG[/bold red].safetensors", "[bold red]BIG[/bold red].safetensors"),  # would be restyled
        ("a\x1b]0;owned\x07b.safetensors", "a\\u001b]0;owned\\u0007b.safetensors"),  # sets the window title
        ("evil\u202egpj.safetensors", "evil\\u202egpj.safetensors"),  # bidi override reverses what follows
        ("two\nerror: forged.safetensors", "two\\u000aerror: forged.safetensors"),  # a forged second error row
    ],
)
def test_hostile_names_are_printed_as_plain_text_on_one_line(tmp_path, name, shown):
    lines = _refused(_patchkit("show", str(tmp_path / name)), 3)
    assert shown in lines[0]


def test_a_huge_name_gives_a_bounded_line(tmp_path):
    # 100 kB: near the kernel's limit for one argument (a file's names can be larger; the same cap holds)
    run = _patchkit("show", str(tmp_path / ("n" * 100_000)))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(run.stderr) < 3000 and "characters elided" in run.stderr


def test_a_name_too_long_for_the_file_system_is_exit_4(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    out = tmp_path / ("k" * 300 + ".safetensors")
    lines = _refused(_patchkit("export", str(patch), "--format", "kohya", "-o", str(out)), 4)
    assert "File name too long" in lines[0] and "255 bytes" in lines[1]
    assert not any(p.name.startswith(("k", ".k")) for p in tmp_path.iterdir())  # nothing half-written


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_the_disk_refuses_is_exit_4_and_leaves_nothing(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    run = _patchkit("convert", str(folder), "-o", str(out), preexec=_file_size_limit(64 * 1024))
    lines = _refused(run, 4)
    assert "File too large" in lines[0] and "ulimit" in lines[1]
    assert lines[0].startswith(f"error: {out}:")  # the output that failed is named, not "a file"
    assert list(out.parent.iterdir()) == []  # no output, no temporary
    assert os.path.getsize(folder / "unet" / "diffusion_pytorch_model.safetensors") > 64 * 1024  # the limit bit


def test_with_json_a_refusal_is_a_json_object_on_stdout(tmp_path):
    import json

    run = _patchkit("show", str(tmp_path / "missing.safetensors"), "--json")
    _refused(run, 3)  # the human line stays on stderr
    assert json.loads(run.stdout) == {"error": f"{tmp_path / 'missing.safetensors'} does not exist",
                                      "hint": "check the path", "exit": 3}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["apply"], "Missing argument 'base'"), (["apply", "a", "b", "-o", "c", "--scale", "x"], "--scale"),
     (["nosuch"], "No such command")],
)  # fmt: skip
def test_usage_mistakes_keep_the_usage_line_and_the_error_style(args, needle):
    run = _patchkit(*args)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "╭" not in run.stderr  # no typer box
    usage, error, hint = run.stderr.strip().splitlines()
    assert usage.startswith("Usage: ") and error.startswith("error: ") and needle in error
    assert hint.startswith("hint: ") and "--help" in hint


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_folder_or_fifo_given_as_a_patch_is_named_for_what_it_is(tmp_path, kind):
    path = tmp_path / "p.safetensors"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    run = _patchkit("show", str(path))
    _refused(run, 3)
    expected = "is a folder, not a file" if kind == "folder" else "is a FIFO, not a regular file"
    assert expected in run.stderr and "does not exist" not in run.stderr


def test_pickle_hints_offer_allow_pickle_only_where_it_works(tmp_path):
    import pickle

    patch = tmp_path / "p.safetensors"
    patch.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))  # a pickle under a safetensors name
    shown = _refused(_patchkit("show", str(patch)), 3)
    assert "is a pickle" in shown[0] and "--allow-pickle" not in "\n".join(shown)
    import shutil

    from patchkit.models.refs import TESTBED_MODEL

    folder = tmp_path / "pipe"
    shutil.copytree(TESTBED_MODEL, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    weights.with_suffix(".bin").write_bytes(b"\x80\x04")  # what save_pretrained wrote before safetensors
    info = _refused(_patchkit("info", str(folder)), 3)
    assert "pickled weights" in info[0] and "--allow-pickle" not in "\n".join(info)


@pytest.mark.parametrize("command", [["forget", "testbed", "-c", "x", "-o", "p.pt"], ["apply", "a", "b", "-o", "c"]])
def test_the_retired_force_flag_names_its_two_successors(command):
    run = _patchkit(*command, "--force")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    hint = run.stderr.strip().splitlines()[-1]
    assert hint.startswith("hint: ") and "--overwrite" in hint and "--ignore-base" in hint


def test_a_reader_that_closed_the_pipe_gets_silence_not_an_error():
    """`patchkit ... | head`: the reader went away mid-output; like cat, say nothing (no error: line)."""
    import shlex

    for lines in (3, 50):  # gone at once, or gone while the help is still being written
        command = f"{shlex.quote(sys.executable)} -m patchkit import --help | head -{lines} > /dev/null"
        run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
        assert "error:" not in run.stderr and "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize("inside", ["model_index.json", "unet/config.json", "stack", "patchkit-provenance"])
def test_a_fifo_where_a_small_file_belongs_is_refused_not_waited_on(tiny_models, tmp_path, inside):
    """A FIFO in place of a pipeline config, a stack file or a patched folder's provenance once made
    `apply` and `revert` block on an open that never returns; each is named and refused."""
    import shutil

    folder, _ = tiny_models["sd15"]
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    out = tmp_path / "out"
    if inside == "stack":
        stack = tmp_path / "s.stack.json"
        os.mkfifo(stack)
        args = ["apply", str(model), str(stack), "-o", str(out)]
    elif inside == "patchkit-provenance":
        revert_data = str(tmp_path / "r.safetensors")
        assert _patchkit("apply", str(model), str(patch), "-o", str(out), "--revert-data", revert_data).returncode == 0
        provenance = out / "patchkit.json"
        provenance.unlink()
        os.mkfifo(provenance)
        out = tmp_path / "again"
        args = ["revert", str(tmp_path / "out"), "--revert-data", str(tmp_path / "r.safetensors"), "-o", str(out)]
    else:
        (model / inside).unlink()
        os.mkfifo(model / inside)
        args = ["apply", str(model), str(patch), "-o", str(out)]
    lines = _refused(_patchkit(*args), 3)
    assert "FIFO" in lines[0]
    assert not out.exists()
