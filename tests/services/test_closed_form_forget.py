"""`forget --method closed-form` end to end: real files, real diffusers loading, the testbed's judges.

The testbed check scores on the testbed's bench prompts, which the closed form never
encodes: its training templates and retain prompts leave the bench's phrasings out
(tests/testbed/test_out_of_sample.py), so the drop measured here is out of sample.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from patchkit.backend import conditioning, pipeline
from patchkit.backend.lora import load_patch
from patchkit.backend.text_side import load_text_side
from patchkit.core.manifest import MANIFEST_KEY
from patchkit.models import refs, weights
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.score import score
from patchkit.testbed.paths import TESTBED_BENCH
from patchkit.training.prompts import Concept
from patchkit.training.settings import ClosedFormSettings
from tests.cli.test_cli import run_cli

CIRCLE = (Concept("circle", "object"),)


def _closed_form(model: str, out: Path, concepts=CIRCLE, **kwargs) -> Path:
    forget(ForgetRequest(ModelSource(model, kwargs.pop("config", None)), list(concepts), out,
                         method="closed-form", **kwargs))  # fmt: skip
    return out


def _manifest(patch: Path) -> dict:
    with safe_open(str(patch), "np") as handle:
        return json.loads(handle.metadata()[MANIFEST_KEY])


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_text_side_gives_the_states_the_pipeline_gives_the_unet(tiny_models, name):
    folder, _ = tiny_models[name]
    ref = refs.resolve(str(folder))
    configs = weights.configs_of(ref.config_folder)
    text = load_text_side(ref.config_folder, configs, weights.model_spans(ref, configs))
    pipe = pipeline.load_pipeline(ref)
    prompts = ["a photo of a circle", "a red square on a table"]
    ours = text.encode(prompts).states
    theirs = conditioning.encode(pipe, prompts).states
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)
    # a causal encoder: the first positions alone give the same states
    assert torch.allclose(text.encode(prompts, length=6).states, theirs[:, :6], atol=1e-5)


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_shared_prefixes_and_short_lengths_give_the_pipeline_states(tiny_models, name):
    """The encoder computes a chunk's common prefix once and stops at each prompt's length:
    every state it returns must still be the pipeline's, whatever the chunking."""
    folder, _ = tiny_models[name]
    ref = refs.resolve(str(folder))
    configs = weights.configs_of(ref.config_folder)
    text = load_text_side(ref.config_folder, configs, weights.model_spans(ref, configs))
    pipe = pipeline.load_pipeline(ref)
    words = ["circle", "square", "red ring", "blue star", "ring"]
    prompts = [t.format(w) for t in ("a photo of a {}", "a photo of {} on a table", "{}") for w in words]
    theirs = conditioning.encode(pipe, prompts).states
    lengths = [3 + (k % 5) for k in range(len(prompts))]
    seen = []
    for rows, states in text.encode_groups(prompts, lengths):
        for k, row in enumerate(rows):
            n = lengths[row]
            assert torch.allclose(states[k, :n], theirs[row, :n], atol=1e-5), prompts[row]
            seen.append(row)
    assert sorted(seen) == list(range(len(prompts)))


def test_a_run_of_mixed_lengths_shares_only_the_prefix_every_row_has(tiny_models):
    """Sorted by length first, the first and last rows of a run can share more than a row between
    them ("a circle" ... "a circle on a table" around "a square"): that row keeps its own tokens."""
    folder, _ = tiny_models["sd15"]
    ref = refs.resolve(str(folder))
    configs = weights.configs_of(ref.config_folder)
    text = load_text_side(ref.config_folder, configs, weights.model_spans(ref, configs))
    pipe = pipeline.load_pipeline(ref)
    prompts = ["a circle", "a square", "a circle on a table"]
    lengths = [int(n) for n in text.used_positions(text.ids(prompts))]
    assert lengths[0] == lengths[1] < lengths[2]
    theirs = conditioning.encode(pipe, prompts).states
    ours = text.text_encoder.states(text.ids(prompts), lengths=lengths)
    for row, n in enumerate(lengths):
        assert torch.allclose(ours[row, :n], theirs[row, :n], atol=1e-5), prompts[row]


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_patch_loads_in_diffusers_and_changes_the_output(tiny_models, tmp_path, name):
    folder, _ = tiny_models[name]
    patch = _closed_form(str(folder), tmp_path / "p.safetensors")
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))

    def image():
        generator = torch.Generator().manual_seed(0)
        return pipe("a photo of a circle", num_inference_steps=2, generator=generator, output_type="np").images

    before = image()
    load_patch(pipe, patch, adapter_name="closed-form")
    assert not (image() == before).all()
    manifest = _manifest(patch)
    assert manifest["method"]["name"] == "closed-form"
    settings = manifest["method"]["settings"]
    assert 0.0 <= settings["factorisation_error"] < 1.0
    assert settings["moved_states"] > 0 and settings["held_states"] > 0
    assert manifest["format"]["rank"] == settings["rank"] == 8
    keys = list(load_file(str(patch)))
    assert keys and all(k.startswith("unet.") and ".attn2.to_" in k for k in keys)


def test_single_file_and_folder_give_the_same_tensors(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder, single = tiny_models["sd15"]
    from_folder = load_file(str(_closed_form(str(folder), tmp_path / "a.safetensors")))
    from_file = load_file(str(_closed_form(str(single), tmp_path / "b.safetensors", config=folder)))
    assert from_folder.keys() == from_file.keys()
    assert all(torch.equal(from_folder[k], from_file[k]) for k in from_folder)


def test_same_inputs_same_bytes(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder, _ = tiny_models["sd21"]
    first = _closed_form(str(folder), tmp_path / "a.safetensors").read_bytes()
    second = _closed_form(str(folder), tmp_path / "b.safetensors").read_bytes()
    assert first == second


def test_several_concepts_and_a_correction_in_one_solve(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    both = _closed_form(str(folder), tmp_path / "two.safetensors",
                        concepts=[Concept("circle", "object"), Concept("square", "object")])  # fmt: skip
    assert [c["name"] for c in _manifest(both)["concepts"]] == ["circle", "square"]
    fixed = _closed_form(str(folder), tmp_path / "fix.safetensors",
                         concepts=[Concept("circle", "object", target="square")])  # fmt: skip
    assert _manifest(fixed)["concepts"][0]["target"] == "square"
    assert load_file(str(fixed)).keys() == load_file(str(both)).keys()


def test_the_closed_form_imports_neither_diffusers_nor_transformers_models(tmp_path):
    code = (
        "import sys\n"
        "from patchkit.models.refs import ModelSource\n"
        "from patchkit.services.forget import forget\n"
        "from patchkit.services.forget_request import ForgetRequest\n"
        "from patchkit.training.prompts import Concept\n"
        f"forget(ForgetRequest(ModelSource('testbed'), [Concept('circle', 'object')], "
        f"__import__('pathlib').Path({str(tmp_path / 'p.safetensors')!r}), method='closed-form'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'diffusers' or 'modeling' in m))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_testbed_forgets_circle_and_keeps_square(tmp_path):
    patch = _closed_form("testbed", tmp_path / "no-circle.safetensors")
    data = json.loads(TESTBED_BENCH.read_text())
    data["concepts"] = [dict(c, images_per_prompt=4) for c in data["concepts"] if c["name"] in ("circle", "square")]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(data))
    report = score(ModelSource("testbed"), patches=[patch], bench_path=bench, targets=["circle"])
    by_name = {c.concept: c for c in report.concepts}
    assert by_name["circle"].before.score >= 0.75 and by_name["circle"].after is not None
    assert by_name["circle"].after.score <= 0.25
    assert by_name["square"].after is not None and by_name["square"].after.score >= 0.75


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--steps", "5"], "--steps trains Forget-Me-Not"),
        (["--images", "."], "--images trains Forget-Me-Not"),
        (["--ti"], "--ti trains Forget-Me-Not"),
        (["--own-templates"], "--every-template/--own-templates trains Forget-Me-Not"),
        (["--hold-states", "1"], "--hold-states trains Forget-Me-Not"),
        (["--ridge", "nan"], "--ridge nan is outside"),
        (["--preserve", "-1"], "--preserve -1.0 is outside"),
        (["--rank", "0"], "rank 0 is outside"),
        (["--positions", "all"], "unknown --positions 'all'"),
    ],
)
def test_closed_form_refuses_what_it_cannot_use(tmp_path, extra, says):
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--method", "closed-form",
                     "-o", str(out), *extra)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert any(line.startswith("hint: ") for line in lines) and "Traceback" not in result.stderr
    assert not out.exists()


def test_unknown_method_and_ridge_without_it_are_refused(tmp_path):
    base = ["forget", "testbed", "-c", "circle", "--category", "object", "-o", str(tmp_path / "p.safetensors")]
    for extra, says in ((["--method", "uce"], "unknown --method 'uce'"), (["--ridge", "1"], "--ridge is a setting"),
                        (["--positions", "prompt"], "--positions is a setting")):  # fmt: skip
        result = run_cli(*base, *extra)
        assert result.returncode == 2 and says in result.stderr.splitlines()[0], result.stderr


def test_robust_adds_compositions_and_adversarial_rounds_and_records_both(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    concept = [Concept("circle", "object")]
    plain = ForgetRequest(ModelSource("testbed"), concept, tmp_path / "plain.safetensors", method="closed-form")
    robust = ForgetRequest(ModelSource("testbed"), concept, tmp_path / "robust.safetensors", method="closed-form",
                           robust=True)  # fmt: skip
    forget(plain), forget(robust)
    plain_settings = _manifest(tmp_path / "plain.safetensors")["method"]["settings"]
    settings = _manifest(tmp_path / "robust.safetensors")["method"]["settings"]
    assert (plain_settings["robust"], plain_settings["adversarial_rounds"]) == (False, 0)
    assert (settings["robust"], settings["adversarial_rounds"]) == (True, 2)
    assert "a photo of a circle in the style of neon" in settings["training_prompts"]
    assert settings["moved_states"] > plain_settings["moved_states"]  # compositions and the rounds' states
    first = (tmp_path / "robust.safetensors").read_bytes()
    forget(ForgetRequest(ModelSource("testbed"), concept, tmp_path / "again.safetensors", method="closed-form",
                         robust=True))  # fmt: skip
    assert (tmp_path / "again.safetensors").read_bytes() == first


def test_prompt_positions_read_each_prompt_through_its_end_of_text_only(tiny_models, tmp_path, monkeypatch):
    """--positions prompt: fewer states, recorded in the manifest; the same on every run."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder, _ = tiny_models["sd15"]
    full = _manifest(_closed_form(str(folder), tmp_path / "full.safetensors"))["method"]["settings"]
    short = tmp_path / "short.safetensors"
    settings = _manifest(_closed_form(str(folder), short, closed_form=ClosedFormSettings(positions="prompt")))
    recorded = settings["method"]["settings"]
    assert full["positions"] == "context" and recorded["positions"] == "prompt"
    assert 0 < recorded["moved_states"] < full["moved_states"] and 0 < recorded["held_states"] < full["held_states"]
    again = _closed_form(
        str(folder), tmp_path / "again.safetensors", closed_form=ClosedFormSettings(positions="prompt")
    )
    assert again.read_bytes() == short.read_bytes()


def test_prompt_positions_warn_that_the_padding_is_left_out(tmp_path):
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--method", "closed-form",
                     "--positions", "prompt", "-o", str(out), "--no-kohya")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--positions prompt leaves the padding states out of the solve" in result.stderr
    assert out.is_file()
