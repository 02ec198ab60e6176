"""`forget --robust` with FMN: adapters on the image pathway, rounds against the inversion, and every
verb that takes a patch takes one (apply into both layouts and back, merge, export; fuse refuses)."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch
from patchkit.core.manifest import MANIFEST_KEY
from patchkit.errors import UsageError
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.apply import apply, revert
from patchkit.services.forget import forget
from patchkit.services.forget_request import CapacitySettings, ForgetRequest
from patchkit.services.sources import PatchSource
from patchkit.training.prompts import Concept
from patchkit.training.settings import NOT_USED_BY_ROBUST, ForgetSettings
from tests.cli.test_cli import run_cli

# a few steps of everything: one round, a two-step inversion, two images a concept, three retain images
QUICK = CapacitySettings(steps=4, rounds=1, inversion_steps=2, images_per_concept=2, retain_images=3)
SETTINGS = ForgetSettings(batch_size=2)


def _robust(folder: Path, out: Path, capacity: CapacitySettings = QUICK, seed: int = 0) -> Path:
    settings = ForgetSettings(batch_size=2, seed=seed)
    result = forget(ForgetRequest(ModelSource(str(folder)), (Concept("circle", "object"),), out, settings=settings,
                                  robust=True, capacity=capacity))  # fmt: skip
    assert result.steps == capacity.steps  # what it trained, not FMN's 60 (the summary line says it)
    return out


def _manifest(patch: Path) -> dict:
    with safe_open(str(patch), "pt") as handle:
        return json.loads(handle.metadata()[MANIFEST_KEY])


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_robust_trains_the_image_pathway_and_loads_in_diffusers(tiny_models, tmp_path, name):
    folder, _ = tiny_models[name]
    patch = _robust(folder, tmp_path / "p.safetensors")
    keys = load_file(str(patch)).keys()
    modules = {re.sub(r".*\.transformer_blocks\.\d+\.", "", k.split(".lora_")[0]) for k in keys}
    assert modules == set(QUICK.modules)  # attn1, attn2 and the feed-forward layers, each with its factors
    manifest = _manifest(patch)
    assert manifest["format"]["modules"] == list(QUICK.modules)
    recorded = manifest["method"]["settings"]
    assert recorded["robust"] is True and recorded["capacity"]["rounds"] == 1
    assert recorded["capacity"]["modules"] == list(QUICK.modules)
    # FMN's settings that --robust never reads are not recorded as if they had trained it
    assert not NOT_USED_BY_ROBUST & recorded.keys()
    assert recorded["rank"] == SETTINGS.rank and recorded["preserve_weight"] == SETTINGS.preserve_weight
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))

    def image():
        generator = torch.Generator().manual_seed(0)
        return pipe("a photo of a circle", num_inference_steps=2, generator=generator, output_type="np").images

    before = image()
    load_patch(pipe, patch, adapter_name="robust")
    assert not (image() == before).all()


def test_same_seed_same_bytes_and_the_round_changes_the_patch(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder, _ = tiny_models["sd15"]
    first = _robust(folder, tmp_path / "a.safetensors").read_bytes()
    assert _robust(folder, tmp_path / "b.safetensors").read_bytes() == first
    assert _robust(folder, tmp_path / "c.safetensors", seed=1).read_bytes() != first
    # the round's token is trained through: without the round, the patch differs
    no_round = CapacitySettings(steps=4, rounds=0, inversion_steps=2, images_per_concept=2, retain_images=3)
    assert _robust(folder, tmp_path / "d.safetensors", capacity=no_round).read_bytes() != first
    # with two rounds, the second round's token starting from the first's changes what is trained
    two = dataclasses.replace(QUICK, steps=6, rounds=2)
    cold = _robust(folder, tmp_path / "e.safetensors", capacity=two).read_bytes()
    warm = _robust(folder, tmp_path / "f.safetensors", capacity=dataclasses.replace(two, warm_start=True))
    assert warm.read_bytes() != cold
    assert _manifest(warm)["method"]["settings"]["capacity"]["warm_start"] is True


def test_a_robust_patch_applies_to_both_layouts_reverts_merges_and_exports(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    patch = _robust(folder, tmp_path / "p.safetensors")
    private = tmp_path / "private"
    private.mkdir()
    as_folder = apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=private / "d.revert")
    as_file = apply(str(single), [PatchSource(patch)], tmp_path / "out.safetensors", config=folder,
                    revert_data=private / "f.revert")  # fmt: skip
    assert as_folder.output_fingerprint == as_file.output_fingerprint != as_folder.base_fingerprint
    # an image-pathway weight in the output is the base's plus the patch's B @ A
    factors = load_file(str(patch))
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    delta = factors[f"unet.{module}.lora_B.weight"] @ factors[f"unet.{module}.lora_A.weight"]
    base = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))[f"{module}.weight"]
    out = load_file(str(tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors"))[f"{module}.weight"]
    assert delta.abs().max() > 0
    assert torch.allclose(out, base + delta, atol=1e-6, rtol=1e-5)
    revert(str(tmp_path / "out.safetensors"), tmp_path / "back.safetensors", revert_data=private / "f.revert",
           config=folder)  # fmt: skip
    assert filecmp.cmp(single, tmp_path / "back.safetensors", shallow=False)

    other = tmp_path / "noir.safetensors"
    forget(ForgetRequest(ModelSource(str(folder)), (Concept("noir", "style"),), other,
                         settings=ForgetSettings(steps=2, images_per_concept=2, batch_size=2)))  # fmt: skip
    merged = run_cli("merge", str(patch), str(other), "-o", str(tmp_path / "m.safetensors"))
    assert merged.returncode == 0, merged.stderr
    fused = run_cli("merge", str(patch), str(other), "--method", "fuse", "--base", str(folder),
                    "-o", str(tmp_path / "f.safetensors"))  # fmt: skip
    assert fused.returncode == 2 and "cross-attention keys and values only" in fused.stderr
    assert "hint:" in fused.stderr and not (tmp_path / "f.safetensors").exists()
    exported = run_cli("export", str(patch), "--format", "kohya", "-o", str(tmp_path / "k.safetensors"))
    assert exported.returncode == 0, exported.stderr
    kohya = load_file(str(tmp_path / "k.safetensors"))
    assert any("attn1_to_q.lora_down" in k for k in kohya) and any("ff_net_2.lora_up" in k for k in kohya)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--context", "noir"], "--context keeps it outside its context"),
        (["--full"], "--full trains full deltas"),
        (["--no-default-retain"], "--no-default-retain leaves none"),
        (["--attention", "0.5"], "--attention belongs to the default forget's loss"),
        (["--anchor", "2"], "--anchor belongs to the default forget's loss"),
        (["--hold-states", "1"], "--hold-states belongs to the default forget's loss"),
    ],
)
def test_what_robust_cannot_do_is_refused_before_any_work(tmp_path, extra, message):
    out = tmp_path / "p.safetensors"
    result = run_cli("forget", "testbed", "-c", "circle", "--category", "object", "--robust", *extra, "-o", str(out))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr and not out.exists()


def test_robust_refusals_reach_the_service_too(tmp_path):
    request = ForgetRequest(ModelSource("testbed"), (Concept("circle", "object"),), tmp_path / "p.safetensors",
                            robust=True, default_retain=False)  # fmt: skip
    with pytest.raises(UsageError, match="leaves none"):
        forget(request)
