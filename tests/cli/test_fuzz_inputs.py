"""A fuzz layer over what patchkit reads: hostile safetensors headers, manifests, names and numbers.

Every generated input goes through the real commands (in-process, through Typer's runner and
patchkit's one error boundary) and must end in a documented exit code with no traceback and
no output file. Before issue 16's fixes this found markup crashes, RecursionErrors, NaN
scales accepted and lenient headers; it keeps them found.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from patchkit.cli.app import app
from patchkit.io.patch_file import read_patch
from patchkit.services.fixtures import synthetic_patch

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 8}
runner = CliRunner()

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[/]", "[bold red]x[/bold red]", "\x1b]0;t\x07", "\u202e", "a\nerror: b", "../../etc", "\x00"]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.none()
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, hostile_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=12,
)
tensor_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F64", "X9", 7]),
        "shape": st.one_of(st.lists(st.integers(-2, 6), max_size=3), json_values),
        "data_offsets": st.one_of(st.lists(st.integers(-4, 64), min_size=2, max_size=2), json_values),
    }
)
headers = st.dictionaries(
    st.one_of(hostile_text, st.just("__metadata__")),
    st.one_of(tensor_entries, st.dictionaries(hostile_text, hostile_text, max_size=3), json_values),
    max_size=5,
)


def _write(path, header_text: str, data: bytes) -> None:
    raw = header_text.encode("utf-8", "surrogatepass")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _ended_cleanly(result) -> None:
    assert result.exit_code in DOCUMENTED, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


@pytest.fixture(scope="module")
def patch_file(tiny_models, tmp_path_factory):
    folder, _ = tiny_models["sd15"]
    return folder, synthetic_patch(str(folder), tmp_path_factory.mktemp("fuzz") / "p.safetensors", concept="c")


@pytest.fixture(scope="module")
def patched_single_file(tiny_models, tmp_path_factory):
    """A real single-file checkpoint `apply` wrote, and the revert file beside it."""
    _, single = tiny_models["sd15"]
    root = tmp_path_factory.mktemp("patched")
    patch = synthetic_patch(str(single), root / "p.safetensors", concept="c")
    out, revert_data = root / "patched.safetensors", root / "revert.safetensors"
    result = runner.invoke(app, ["apply", str(single), str(patch), "-o", str(out), "--revert-data", str(revert_data)])
    assert result.exit_code == 0, result.output
    control = root / "reverted.safetensors"  # the revert arguments the fuzz uses work on the real pair
    result = runner.invoke(app, ["revert", str(out), "--revert-data", str(revert_data), "-o", str(control)])
    assert result.exit_code == 0 and control.read_bytes() == single.read_bytes(), result.output
    return out, revert_data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers, data=st.binary(max_size=64), depth=st.sampled_from([0, 0, 0, 50_000]))
def test_hostile_headers_end_in_a_documented_exit_and_write_nothing(
    tmp_path, patch_file, patched_single_file, header, data, depth
):
    """Every command that reads a safetensors file it was handed: as a patch (show, verify, export,
    import, apply), as a patched checkpoint or as its revert file (revert)."""
    folder, _ = patch_file
    patched, revert_data = patched_single_file
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis reuses tmp_path across examples
    path = tmp_path / "fuzz.safetensors"
    text = "[" * depth + "]" * depth if depth else json.dumps(header, allow_nan=True)
    _write(path, text, data)
    out = tmp_path / "out.safetensors"
    runs = [
        ["show", str(path)],
        ["show", str(path), "--json"],
        ["verify", str(path), "--trust-store"],
        ["export", str(path), "--format", "kohya", "-o", str(out)],
        ["import", str(path), "--base", str(folder), "-c", "x", "--category", "object", "-o", str(out), "--no-kohya"],
        ["apply", str(folder), str(path), "-o", str(tmp_path / "applied")],
        ["revert", str(path), "--revert-data", str(revert_data), "-o", str(out)],
        ["revert", str(patched), "--revert-data", str(path), "-o", str(out)],
    ]
    for args in runs:
        result = runner.invoke(app, args)
        _ended_cleanly(result)
        if result.exit_code != 0:
            assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.safetensors"], (args, result.output)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["name", "version", "concepts", "base", "patch_id", "format"]), value=json_values)
def test_hostile_manifests_end_in_a_documented_exit_and_write_nothing(patch_file, tmp_path, field, value):
    from patchkit.io.tensors_out import save_tensors

    folder, patch = patch_file
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis reuses tmp_path across examples
    manifest = dict(read_patch(patch).manifest, **{field: value})
    bad = tmp_path / "m.safetensors"
    save_tensors(bad, load_file(str(patch)), metadata={"patchkit.manifest": json.dumps(manifest, allow_nan=True)})
    out = tmp_path / "out"
    for args in (["show", str(bad)], ["apply", str(folder), str(bad), "-o", str(out)],
                 ["registry", "add", str(bad), "--registry", str(tmp_path / "r")]):  # fmt: skip
        result = runner.invoke(app, args)
        _ended_cleanly(result)
        if args[0] == "apply" and result.exit_code != 0:
            assert not out.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "inf", "1e39", "-0"])))
def test_hostile_scales_end_in_a_documented_exit_and_never_fuse_non_finite_weights(patch_file, tmp_path, scale):
    folder, patch = patch_file
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "out"  # hypothesis reuses tmp_path across examples
    result = runner.invoke(app, ["apply", str(folder), str(patch), "-o", str(out), "--scale", str(scale)])
    _ended_cleanly(result)
    value = float(scale)
    if not (abs(value) <= 100):  # NaN, Inf and the absurd are refused, with nothing written
        assert result.exit_code == 2 and not out.exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["description", "author", "concept"]),
    text=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["[/]", "[/]x", "[bold red]BIG[/bold red]",
                   "\x1b]0;title\x07", "a\u202eb", "x\nerror: forged", "[link=file:///etc]x[/link]"])),
)  # fmt: skip
def test_valid_manifests_with_hostile_text_are_shown_as_text_by_every_command(patch_file, tmp_path, field, text):
    """Schema-valid manifests whose free text is hostile: every command that prints it ends cleanly,
    and what it prints is the text (no markup applied, no control character passed through)."""
    from patchkit.io.tensors_out import save_tensors

    folder, patch = patch_file
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis reuses tmp_path across examples
    manifest = dict(read_patch(patch).manifest)
    if field == "concept":
        manifest["concepts"] = [dict(manifest["concepts"][0], name=text, token=text)]
    else:
        manifest[field] = text
    hostile = tmp_path / "h.safetensors"
    save_tensors(hostile, load_file(str(patch)), metadata={"patchkit.manifest": json.dumps(manifest)})
    other = synthetic_patch(str(folder), tmp_path / "o.safetensors", concept="other", seed=5)
    registry, stack = ["--registry", str(tmp_path / "r")], tmp_path / "s.stack.json"
    runs = [
        ["show", str(hostile)],
        ["registry", "add", str(hostile), *registry],
        ["registry", "list", *registry],
        ["registry", "show", "synthetic-c", *registry],
        ["registry", "search", "c", *registry],
        ["merge", str(hostile), str(other), "-o", str(tmp_path / "m.safetensors"), "--no-kohya"],
        ["apply", str(folder), str(hostile), "-o", str(tmp_path / "out")],
        ["stack", "new", str(folder), "-o", str(stack)],
        ["stack", "add", str(stack), str(hostile)],
        ["stack", "show", str(stack)],
    ]
    for args in runs:
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        _ended_cleanly(result)
        assert "\x1b]" not in result.output and "\u202e" not in result.output, args
        if args[0] == "show" and result.exit_code == 0 and text.startswith("[") and field != "concept":
            assert text in result.output.replace("\n", ""), (args, result.output)  # shown as written


@pytest.fixture(scope="module")
def registry_root(patch_file, tmp_path_factory):
    """A registry holding one real entry, to copy and damage."""
    _, patch = patch_file
    root = tmp_path_factory.mktemp("registry") / "r"
    result = runner.invoke(app, ["registry", "add", str(patch), "--registry", str(root)])
    assert result.exit_code == 0, result.output
    return root


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["ref", "index.json", "registry.json"]),
    content=st.one_of(
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.binary(max_size=64),
        st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b'{"name": "x", "version": "1", "blob": "../../etc"}']),
    ),
)
def test_a_damaged_registry_ends_in_a_documented_exit_for_every_registry_command(
    registry_root, tmp_path, target, content
):
    """Any bytes in a ref, the index or the layout marker: every registry command ends cleanly, and
    `verify` never calls a registry whose ref or marker was replaced ok."""
    import shutil

    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "r"  # hypothesis reuses tmp_path across examples
    shutil.copytree(registry_root, root)
    path = next((root / "refs").glob("*/*.json")) if target == "ref" else root / target
    original = path.read_bytes()
    path.write_bytes(content)
    registry = ["--registry", str(root)]
    for args in (["verify"], ["list"], ["show", "synthetic-c"], ["search", "c"], ["gc", "--dry-run"], ["reindex"],
                 ["export", "synthetic-c@0.0.1", "-o", str(tmp_path / "x")]):  # fmt: skip
        result = runner.invoke(app, ["registry", *args, *registry])
        _ended_cleanly(result)
        if args == ["verify"] and target != "index.json" and content != original:
            assert result.exit_code != 0, (target, content[:80], result.output)


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "folder"])
def test_what_is_not_a_file_is_refused_by_every_reader_without_blocking(
    patch_file, patched_single_file, tmp_path, kind
):
    """A FIFO, a link to /dev/zero or a folder where a command expects a file: refused by name
    (exit 2 or 3), never read forever, and nothing written."""
    import os
    import signal

    folder, patch = patch_file
    patched, _ = patched_single_file
    bad = tmp_path / "bad.safetensors"
    {"fifo": lambda: os.mkfifo(bad), "link-to-dev-zero": lambda: bad.symlink_to("/dev/zero"), "folder": bad.mkdir}[
        kind
    ]()
    out = tmp_path / "out.safetensors"
    stack = tmp_path / "s.stack.json"
    assert runner.invoke(app, ["stack", "new", str(folder), "-o", str(stack)]).exit_code == 0
    runs = [
        ["show", str(bad)],
        ["verify", str(bad), "--trust-store"],
        ["export", str(bad), "--format", "kohya", "-o", str(out)],
        ["import", str(bad), "--base", str(folder), "-c", "x", "--category", "object", "-o", str(out), "--no-kohya"],
        ["apply", str(folder), str(bad), "-o", str(tmp_path / "applied")],
        ["revert", str(patched), "--revert-data", str(bad), "-o", str(out)],
        ["merge", str(patch), str(bad), "-o", str(out), "--no-kohya"],
        ["registry", "add", str(bad), "--registry", str(tmp_path / "r")],
        ["stack", "add", str(stack), str(bad)],
        ["info", str(bad)],
    ]

    def blocked(*_):
        raise TimeoutError("a reader blocked on what is not a regular file")

    previous = signal.signal(signal.SIGALRM, blocked)
    try:
        for args in runs:
            signal.alarm(30)
            result = runner.invoke(app, args)
            signal.alarm(0)
            _ended_cleanly(result)
            assert result.exit_code in (2, 3), (args, result.exit_code, result.output)
            assert not out.exists() and not (tmp_path / "applied").exists(), args
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
