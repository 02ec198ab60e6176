"""`forget --prompt` and `--retain-file` on a model patchkit never saw, as a user runs them.

The model is the testbed's weights behind a tokenizer that reads 8 tokens (a copy, so
patchkit treats it as any user's folder: the generic world, no known concepts). Of the
generic object templates, "a photo of a circle" and "a circle" fit, "a circle on a table"
is cut short but keeps the concept, and "a close-up photo of a circle" loses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from patchkit.core.world import GENERIC_TEMPLATES
from patchkit.models.refs import TESTBED_MODEL
from patchkit.testbed.conceptbench_build import build_testbed_bench
from tests.cli.test_cli import run_cli


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(TESTBED_MODEL, folder)
    config_path = folder / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model_max_length": 8}))
    return folder


def _manifest(patch: Path) -> dict:
    with safe_open(str(patch), "np") as handle:
        return json.loads(handle.metadata()["patchkit.manifest"])


def _forget(model: Path, out: Path, *extra: str):
    return run_cli("forget", str(model), "-c", "circle", "--category", "object", "--steps", "2", "-o", str(out), *extra)


def test_truncated_generic_templates_are_dropped_with_a_warning_each(short_context_model, tmp_path):
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert '"a close-up photo of a circle"' in warnings[0] and "8 tokens" in warnings[0]
    settings = _manifest(out)["method"]["settings"]
    own = ["a photo of a circle", "a circle", "a circle on a table"]
    assert settings["training_prompts"][:3] == own
    # --every-template (the default) adds the other categories' templates; those the context
    # cuts off go without a warning (nobody chose them), and the rest are trained on
    others = {t.format("circle") for c, ts in GENERIC_TEMPLATES.items() if c != "object" for t in ts}
    extra = settings["training_prompts"][3:]
    assert extra and set(extra) < others and "a portrait of circle" in extra
    assert settings["every_template"] is True
    # the manifest lists the retain prompts used, not a count, with where they came from
    assert isinstance(settings["retain_prompts"], list) and settings["retain_prompts"]
    assert set(settings["retain_sources"]) <= {"generic", "neighbours", "world", "given"}
    assert "world" not in settings["retain_sources"]  # a user's folder: patchkit knows none of its concepts
    assert not any("circle" in p.split() for p in settings["retain_prompts"])


def test_own_templates_trains_the_category_s_templates_alone(short_context_model, tmp_path):
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out, "--own-templates")
    assert result.returncode == 0, result.stderr
    settings = _manifest(out)["method"]["settings"]
    assert settings["training_prompts"] == ["a photo of a circle", "a circle", "a circle on a table"]
    assert settings["every_template"] is False


def test_user_prompts_replace_the_templates_and_retain_file_adds(short_context_model, tmp_path):
    retain_file = tmp_path / "keep.txt"
    retain_file.write_text("a ring\n\n  a square  \n", encoding="utf-8")
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out, "--prompt", "a {}", "--prompt", "a red {}", "--retain",
                     "a triangle", "--retain-file", str(retain_file), "--no-default-retain")  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = _manifest(out)["method"]["settings"]
    # the user's phrasings first, then (--every-template, the default) the other categories'
    # generic ones that fit the context, in words this tokenizer reads whole
    assert settings["training_prompts"][:2] == ["a circle", "a red circle"]
    others = {t.format("circle") for c, ts in GENERIC_TEMPLATES.items() if c != "object" for t in ts}
    extra = settings["training_prompts"][2:]
    assert extra and set(extra) < others and "a portrait of circle" in extra
    assert settings["retain_prompts"] == ["a triangle", "a ring", "a square"]
    assert settings["retain_sources"] == {"given": 3}


def test_own_templates_with_user_prompts_trains_those_alone(short_context_model, tmp_path):
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out, "--prompt", "a {}", "--prompt", "a red {}", "--own-templates")
    assert result.returncode == 0, result.stderr
    assert _manifest(out)["method"]["settings"]["training_prompts"] == ["a circle", "a red circle"]


def test_every_prompt_lost_is_refused_with_the_context_length(short_context_model, tmp_path):
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", str(short_context_model), "-c", "circle", "--category", "style", "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert "8-token context" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--prompt", "a photo of a thing"], 2, "exactly one {}"),
        (["--prompt", "a {} and a {}"], 2, "exactly one {}"),
        (["--prompt", "a {color} {}"], 2, "no other braces"),
        (["--prompt", "a very big and very round {}"], 2, "tokens; this model reads 8"),
        (["--retain", "a very long retain prompt that cannot fit"], 2, "tokens; this model reads 8"),
        (["--retain", "a ring \x1b[31mred"], 2, "control character U+001B"),
        (["--prompt", "a \u202e{}"], 2, "control character U+202E"),
        (["--retain", "   "], 2, "is empty"),
    ],
)
def test_bad_prompts_are_one_line_errors_and_write_nothing(short_context_model, tmp_path, extra, code, message):
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out, *extra)
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no prompt"),
        (b"\n   \n\n", "holds no prompt"),
        (b"a ring\n\xff\xfe bad\n", "not UTF-8"),
        (b"a ring\x07\n", "control character"),
    ],
)
def test_bad_retain_files_are_refused_before_loading(tmp_path, content, message):
    retain_file = tmp_path / "keep.txt"
    retain_file.write_bytes(content)
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--retain-file", str(retain_file),
                     "-o", str(out))  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert message in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_retain_fifo_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "keep.txt"
    os.mkfifo(fifo)
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--retain-file", str(fifo),
                     "-o", str(tmp_path / "p.safetensors"))  # fmt: skip
    assert result.returncode == 3 and "a FIFO" in result.stderr, result.stderr


def _fifo(path):
    import os

    os.mkfifo(path)
    return path


def _written(data: bytes):
    def make(path):
        path.write_bytes(data)
        return path

    return make


_NO_CIRCLE = {
    **build_testbed_bench(),
    "concepts": [c for c in build_testbed_bench()["concepts"] if c["name"] != "circle"],
}


@pytest.mark.parametrize(
    ("make_bench", "code", "message"),
    [
        (_written(json.dumps(_NO_CIRCLE).encode()), 2, "target 'circle' is not a concept of bench 'testbed'"),
        (_written(b"{not json"), 3, "not valid JSON"),
        (_written(b'{"name": "\xff"}'), 3, "not UTF-8"),
        (lambda p: p.with_name("missing.json"), 3, "does not exist"),
        (_fifo, 3, "a FIFO"),
    ],
    ids=["target-missing", "bad-json", "not-utf8", "missing", "fifo"],
)
def test_forget_score_checks_its_bench_before_training(tmp_path, make_bench, code, message):
    """A bench that cannot score the result is refused in seconds, not after the training."""
    bench = make_bench(tmp_path / "bench.json")
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--score", "--bench", str(bench),
                     "-o", str(out))  # fmt: skip
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr and not out.exists()


def test_anchor_to_replaces_every_forget_anchor_in_both_methods(short_context_model, tmp_path):
    """--anchor-to "" anchors every prompt to the empty prompt (ESD's anchor); the manifest says so, and the
    patch is not the default one (the states are mapped somewhere else)."""
    default, empty = tmp_path / "default.safetensors", tmp_path / "empty.safetensors"
    common = ("-c", "circle", "--category", "object", "--prompt", "a {}", "--prompt", "a red {}", "--method",
              "closed-form")  # fmt: skip
    assert run_cli("forget", str(short_context_model), *common, "-o", str(default)).returncode == 0
    result = run_cli("forget", str(short_context_model), *common, "--anchor-to", "", "-o", str(empty))
    assert result.returncode == 0, result.stderr
    assert _manifest(default)["method"]["settings"]["anchors"] == ["a", "a red"]
    assert _manifest(empty)["method"]["settings"]["anchors"] == ["", ""]
    assert _manifest(empty)["patch_id"] != _manifest(default)["patch_id"]
    fmn = tmp_path / "fmn.safetensors"
    result = _forget(short_context_model, fmn, "--prompt", "a {}", "--anchor-to", "a shape")
    assert result.returncode == 0, result.stderr
    settings = _manifest(fmn)["method"]["settings"]
    assert len(settings["anchors"]) == len(settings["training_prompts"]) > 1  # with the other categories' phrasings
    assert set(settings["anchors"]) == {"a shape"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anchor-to", "a big circle"], 'names "circle"'),
        (["--anchor-to", "a \x1b[31mshape"], "control character U+001B"),
        (["--anchor-to", "", "--context", "noir"], "cannot be combined with --context"),
        (["--anchor-to", "a very long anchor prompt that cannot fit"], "--anchor-to prompt"),
    ],
    ids=["names-the-concept", "control-character", "with-context", "too-long"],
)
def test_bad_anchor_to_is_one_line_error_and_writes_nothing(short_context_model, tmp_path, extra, message):
    out = tmp_path / "p.safetensors"
    result = _forget(short_context_model, out, *extra)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr and not out.exists()
