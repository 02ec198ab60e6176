"""The revival attack's training: fine-tune a fresh LoRA on a concept's images, as an attacker would.

A forget that only re-routes a name comes back after a few fine-tuning steps on the
concept's pictures; one that removed more takes about as long as teaching the model a word
it never had. This module trains the adapter and hands each checkpoint to the caller, who
draws and judges it (services.attack_runner); it knows nothing of judges or scores.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from patchkit.backend import conditioning
from patchkit.backend.lora_layers import inject
from patchkit.core.pixels import to_tensor


@dataclass(frozen=True)
class LoraFit:
    """How the attacker's adapter trains (the budget's numbers; evaluation.attack_report.RevivalBudget)."""

    rank: int
    learning_rate: float
    batch_size: int


# The projections a DreamBooth/diffusers LoRA trains: self- and cross-attention, queries to outputs.
_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _plain_unet(pipe: Any, *, with_patches: bool) -> nn.Module:
    """A copy of the pipeline's UNet with no adapter layers left: the loaded patches merged into
    its weights (the checkpoint an attacker downloads), or dropped (the base)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet: nn.Module = copy.deepcopy(pipe.unet)
    wrapped = [(name, m) for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        if with_patches:
            module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name), child, module.get_base_layer())
    unet.requires_grad_(False)
    return unet


def fine_tune(
    pipe: Any,
    images: Sequence[Image.Image],
    prompt: str,
    *,
    fit: LoraFit,
    checkpoints: Sequence[int],
    stop_at: float,
    seed: int,
    with_patches: bool,
    check: Callable[[Any, int], float],
    on_step: Callable[[int], None] | None = None,
) -> list[tuple[int, float]]:
    """Train a LoRA on `images` captioned `prompt`, calling `check(pipeline, step)` at each checkpoint.

    `with_patches`: start from the pipeline as loaded, patches merged in; otherwise from the
    base under them. Stops at the first checkpoint whose score reaches `stop_at` (step 0
    included: a concept already there needs no training) or after the last checkpoint.
    Returns (step, score) for every checkpoint taken. The pipeline passed in is not changed.
    """
    generator = torch.Generator().manual_seed(seed)
    unet = _plain_unet(pipe, with_patches=with_patches)
    adapters = inject(unet, _TARGETS, fit.rank, seed)
    parameters = [p for a in adapters.values() for p in a.parameters() if p.requires_grad]
    for adapter in adapters.values():
        adapter.base.requires_grad_(False)
    extra = {"requires_safety_checker": False} if "safety_checker" in pipe.components else {}
    tuned = type(pipe)(**{**pipe.components, "unet": unet}, **extra)
    tuned.set_progress_bar_config(disable=True)
    optimizer = torch.optim.AdamW(parameters, lr=fit.learning_rate, weight_decay=0.0)

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean * pipe.vae.config.scaling_factor
    cond = conditioning.encode(tuned, [prompt]).rows([0] * fit.batch_size)
    scheduler = pipe.scheduler
    prediction = scheduler.config.get("prediction_type", "epsilon")
    wanted, last = set(checkpoints), max(checkpoints)
    history: list[tuple[int, float]] = []
    for step in range(last + 1):
        if step in wanted:
            unet.eval()
            history.append((step, check(tuned, step)))
            if history[-1][1] >= stop_at:
                break
        if step == last:
            break
        unet.train()
        pick = torch.randint(0, latents.shape[0], (fit.batch_size,), generator=generator)
        clean = latents[pick]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (fit.batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        predicted = conditioning.predict(unet, noisy, timesteps, cond)
        target = scheduler.get_velocity(clean, noise, timesteps) if prediction == "v_prediction" else noise
        loss = F.mse_loss(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step:
            on_step(step + 1)
    unet.eval()
    return history
