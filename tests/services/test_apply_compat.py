"""A patched checkpoint is an ordinary diffusers checkpoint, and it draws what base + LoRA draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from patchkit.models.refs import ModelSource
from patchkit.services.apply import apply
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.models import convert_to_single_file
from patchkit.services.score import score
from patchkit.services.sources import PatchSource
from patchkit.testbed.paths import TESTBED_BENCH, TESTBED_MODEL
from patchkit.training.prompts import Concept

PROMPT = "a photo of a circle"


@pytest.fixture(scope="module")
def circle_patch(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compat") / "no-circle.safetensors"
    forget(ForgetRequest(ModelSource("testbed"), [Concept("circle", "object")], out))
    return out


def _draw(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(3)
    return pipe([PROMPT] * 2, num_inference_steps=8, generator=generator, output_type="np").images


def _plain(path: Path, single: bool = False):
    kwargs = {"safety_checker": None, "requires_safety_checker": False, "local_files_only": True}
    if single:
        return StableDiffusionPipeline.from_single_file(str(path), config=str(TESTBED_MODEL), **kwargs)
    return StableDiffusionPipeline.from_pretrained(str(path), **kwargs)


@pytest.mark.slow
def test_patched_checkpoints_load_in_plain_diffusers_and_match_fused_lora(circle_patch, tmp_path):
    reference = _plain(TESTBED_MODEL)
    base_images = _draw(reference)
    reference.load_lora_weights(str(circle_patch), adapter_name="p")
    reference.fuse_lora()
    expected = _draw(reference)
    assert np.abs(expected - base_images).mean() > 0.01  # the patch changes the picture

    apply("testbed", [PatchSource(circle_patch)], tmp_path / "folder")
    assert np.abs(_draw(_plain(tmp_path / "folder")) - expected).max() < 2e-3

    convert_to_single_file(ModelSource("testbed"), tmp_path / "testbed.safetensors")
    apply(str(tmp_path / "testbed.safetensors"), [PatchSource(circle_patch)], tmp_path / "single.safetensors",
          config=TESTBED_MODEL)  # fmt: skip
    assert np.abs(_draw(_plain(tmp_path / "single.safetensors", single=True)) - expected).max() < 2e-3


@pytest.mark.slow
def test_mscores_of_the_patched_folder_equal_base_plus_lora(circle_patch, tmp_path):
    bench = json.loads(TESTBED_BENCH.read_text())
    keep = {"circle", "square", "alice", "noir"}
    # 16 images a concept (a style has 4 prompts: 4 each)
    bench["concepts"] = [
        dict(c, images_per_prompt=16 // len(c["prompts"])) for c in bench["concepts"] if c["name"] in keep
    ]
    for concept in bench["concepts"]:
        concept.pop("reference_images", None)
    bench_path = tmp_path / "bench.json"
    bench_path.write_text(json.dumps(bench))

    apply("testbed", [PatchSource(circle_patch)], tmp_path / "patched")
    with_lora = score(ModelSource("testbed"), patches=[circle_patch], bench_path=bench_path, targets=["circle"])
    fused = score(ModelSource(str(tmp_path / "patched")), bench_path=bench_path)
    lora_scores = {c.concept: c.after.score for c in with_lora.concepts if c.after}
    fused_scores = {c.concept: c.before.score for c in fused.concepts}
    assert lora_scores["circle"] < 0.3  # forgotten in both ...
    for name in keep:  # ... and every score agrees within sampling noise (16 images: 1/16 per flip)
        assert abs(lora_scores[name] - fused_scores[name]) <= 0.125, (name, lora_scores, fused_scores)
