"""The revival attack's fine-tuning: what it starts from, that it learns, and that it leaves the model alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from patchkit.backend import conditioning, pipeline
from patchkit.backend.lora import load_patches
from patchkit.backend.revival import LoraFit, _plain_unet, fine_tune
from patchkit.core.conceptbench import parse_bench
from patchkit.core.pixels import to_tensor
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import ForgetRequest, forget
from patchkit.services.score import reference_images
from patchkit.testbed.conceptbench_build import build_testbed_bench
from patchkit.testbed.paths import TESTBED_BENCH
from patchkit.training.prompts import Concept

PROMPT = "a photo of a circle"
FIT = LoraFit(rank=4, learning_rate=1e-3, batch_size=4)


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    """The testbed with a closed-form no-circle patch loaded as a diffusers adapter."""
    out: Path = tmp_path_factory.mktemp("revival") / "no-circle.safetensors"
    forget(ForgetRequest(ModelSource("testbed"), [Concept("circle", "object")], out, method="closed-form"))
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    load_patches(pipe, [out])
    return pipe


@pytest.fixture(scope="module")
def circles():
    bench = parse_bench(build_testbed_bench())
    circle = next(c for c in bench.concepts if c.name == "circle")
    return reference_images(circle, TESTBED_BENCH.parent)


def _noise_prediction(pipe, unet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    size = pipe.unet.config.sample_size
    noisy = torch.randn((2, pipe.unet.config.in_channels, size, size), generator=generator)
    with torch.no_grad():
        return conditioning.predict(unet, noisy, torch.tensor([500, 900]), conditioning.encode(pipe, [PROMPT] * 2))


def test_the_attacker_starts_from_the_patched_weights_or_from_the_base(patched):
    with_patch = _noise_prediction(patched, patched.unet)
    merged = _noise_prediction(patched, _plain_unet(patched, with_patches=True))
    base = _noise_prediction(patched, _plain_unet(patched, with_patches=False))
    plain = pipeline.load_pipeline(refs.resolve("testbed"))
    expected_base = _noise_prediction(plain, plain.unet)
    # merging the adapter into the weights is the same sum in another order: float32 rounding only
    assert torch.allclose(merged, with_patch, atol=1e-5, rtol=1e-4)
    assert torch.allclose(base, expected_base, atol=1e-5, rtol=1e-4)
    assert (with_patch - expected_base).abs().max() > 1e-3  # the patch does change the prediction


def test_fine_tuning_lowers_the_loss_on_the_images_and_leaves_the_model_under_test_unchanged(patched, circles):
    before = {k: v.clone() for k, v in patched.unet.state_dict().items()}
    size = patched.unet.config.sample_size * patched.vae_scale_factor
    with torch.no_grad():
        latents = patched.vae.encode(to_tensor(circles[:4], size)).latent_dist.mean
        latents = latents * patched.vae.config.scaling_factor
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.full((latents.shape[0],), 400)
    noisy = patched.scheduler.add_noise(latents, noise, timesteps)

    def loss(pipe, step: int) -> float:
        cond = conditioning.encode(pipe, [PROMPT] * latents.shape[0])
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(conditioning.predict(pipe.unet, noisy, timesteps, cond), noise))

    history = fine_tune(
        patched, circles, PROMPT, fit=FIT, checkpoints=(0, 10, 40), stop_at=float("inf"), seed=3,
        with_patches=True, check=loss,
    )  # fmt: skip
    assert [step for step, _ in history] == [0, 10, 40]
    assert history[-1][1] < history[0][1]
    after = patched.unet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_it_stops_at_the_first_checkpoint_that_reaches_the_bar(patched, circles):
    calls: list[int] = []

    def step_as_score(pipe, step: int) -> float:
        calls.append(step)
        return step / 10

    history = fine_tune(
        patched, circles, PROMPT, fit=FIT, checkpoints=(0, 2, 5, 8), stop_at=0.5, seed=3,
        with_patches=False, check=step_as_score,
    )  # fmt: skip
    assert calls == [0, 2, 5] and history == [(0, 0.0), (2, 0.2), (5, 0.5)]
