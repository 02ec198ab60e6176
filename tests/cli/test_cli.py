"""The CLI as users meet it: help, exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from patchkit import __version__
from patchkit.cli.app import app

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def _commands(group, prefix: str = "") -> list:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "patchkit", *args], capture_output=True, text=True, env=full_env, check=False
    )


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"patchkit {__version__}"


def test_every_command_has_help_and_is_in_the_readme():
    readme = README.read_text()
    commands = _commands(typer.main.get_group(app))
    assert len(commands) >= 7
    for name, command in commands:
        assert command.help and len(command.help.split()) >= 6, f"`patchkit {name}` needs help that teaches"
        assert f"patchkit {name}" in readme, f"`patchkit {name}` is not documented in README.md"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0, name


def test_info_json(tiny_models):
    folder, _ = tiny_models["sd21"]
    result = runner.invoke(app, ["info", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["family"] == "sd2"
    assert len(payload["fingerprint"]) == 64


def test_generate_writes_a_labelled_grid(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    out = tmp_path / "grid.png"
    args = ["generate", str(single), "--config", str(folder), "a photo of alice", "a red ring", "-n", "3"]
    result = runner.invoke(app, [*args, "--steps", "2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["seeds"] == [0, 1, 2, 0, 1, 2]
    grid = Image.open(out)
    assert grid.width > 3 * 128 and grid.height > 2 * 128
    again = runner.invoke(app, [*args, "--steps", "2", "-o", str(out)])
    assert again.exit_code == 4 and "already exists" in again.output


def test_convert_keeps_the_fingerprint(tiny_models, tmp_path):
    folder, _ = tiny_models["sdxl"]
    out = tmp_path / "xl.safetensors"
    result = runner.invoke(app, ["convert", str(folder), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    converted = json.loads(result.stdout)["fingerprint"]
    original = json.loads(runner.invoke(app, ["info", str(folder), "--json"]).stdout)["fingerprint"]
    assert converted == original


@pytest.mark.parametrize(
    ("make_input", "needle", "code"),
    [
        (lambda tmp, models: [str(tmp / "nope")], "no such file or folder", 3),
        (lambda tmp, models: [str(tmp)], "is not a Stable Diffusion pipeline folder", 3),
        (lambda tmp, models: ["nobody/not-cached"], "not in the Hugging Face cache", 3),
        (lambda tmp, models: [str(models["sd15"][1])], "needs --config", 2),
    ],
    ids=["missing-path", "not-a-pipeline", "hub-not-cached", "single-file-without-config"],
)
def test_bad_input_exits_with_one_line(tiny_models, tmp_path, make_input, needle, code):
    result = run_cli("info", *make_input(tmp_path, tiny_models))
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_truncated_and_pickled_checkpoints(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(single.read_bytes()[:100_000])
    result = run_cli("info", str(cut), "--config", str(folder))
    assert result.returncode == 3 and "truncated" in result.stderr and str(cut) in result.stderr
    import torch
    from safetensors.torch import load_file

    ckpt = tmp_path / "model.ckpt"
    torch.save(load_file(str(single)), ckpt)
    refused = run_cli("info", str(ckpt), "--config", str(folder))
    assert refused.returncode == 3 and "--allow-pickle" in refused.stderr
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    allowed = run_cli("info", str(ckpt), "--config", str(folder), "--allow-pickle", "--json",
                      env={"TMPDIR": str(scratch)})  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["family"] == "sd1"
    assert list(scratch.iterdir()) == []  # the converted copy is gone with the process


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("info", str(tmp_path / "nope"), env={"PATCHKIT_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "InputError" in result.stderr


def test_quiet_fixture_prints_nothing_on_stderr(tmp_path):
    """transformers' own "Writing model shards" bar used to leak through -q."""
    run = run_cli("-q", "testbed", "fixture", "sd15", "--tiny", "-o", str(tmp_path / "fx"))
    assert run.returncode == 0, run.stderr
    assert run.stderr == "" and (tmp_path / "fx" / "model_index.json").is_file()


def test_quiet_works_after_the_command_too_and_flags_show_no_placeholder(tiny_models, tmp_path):
    from patchkit.services.fixtures import synthetic_patch

    patch = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")
    env = {"PATCHKIT_REGISTRY": str(tmp_path / "registry")}
    loud = run_cli("registry", "add", str(patch), env=env)
    assert loud.returncode == 0 and "already present" not in loud.stderr and "added" in loud.stderr
    for args in (["-q", "registry", "add", str(patch)], ["registry", "add", str(patch), "-q"]):
        quiet = run_cli(*args, env=env)
        assert quiet.returncode == 0 and quiet.stderr == "", (args, quiet.stderr)
    for name, command in _commands(typer.main.get_group(app)):
        assert any("--quiet" in p.opts for p in command.params), f"`patchkit {name}` takes no -q"
        text = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "100"}).output
        assert "<bool>" not in text, f"`patchkit {name} --help` shows a placeholder on a flag"


def test_stack_new_and_add_print_json_for_scripts(tiny_models, tmp_path):
    from patchkit.services.fixtures import synthetic_patch

    folder = str(tiny_models["sd15"][0])
    patch = synthetic_patch(folder, tmp_path / "p.safetensors", concept="circle")
    stack = tmp_path / "release.stack.json"
    new = run_cli("stack", "new", folder, "-o", str(stack), "--json")
    assert new.returncode == 0, new.stderr
    made = json.loads(new.stdout)
    assert made["stack"] == str(stack) and made["patches"] == [] and made["expected_output_fingerprint"] is None
    added = run_cli("stack", "add", str(stack), str(patch), "--json")
    assert added.returncode == 0, added.stderr
    data = json.loads(added.stdout)
    assert [p["name"] for p in data["patches"]] == ["synthetic-circle"] and data["expected_output_fingerprint"]
    assert data == {"stack": str(stack), **json.loads(stack.read_text())}  # what was printed is what was written


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [("patchkit export p.safetensors --format ", "4", {"kohya", "peft"}),
     ("patchkit testbed fixture ", "3", {"sd15", "sd21", "sdxl"})],
)  # fmt: skip
def test_shell_completion_offers_the_values_an_option_takes(words, cword, expected):
    env = {"_PATCHKIT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    script = Path(sys.executable).with_name("patchkit")  # the installed command: completion keys on its name
    run = subprocess.run([str(script)], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert set(run.stdout.split()) == expected, (run.stdout, run.stderr)
