"""Textual inversion: learn one new token's embedding from images, with a frozen model.

Used by the capacity score (if the model under test can still be taught a token that
reproduces a concept, the concept is still in the weights, whatever its name does) and by
`forget --ti`, which forgets through the learnt token as well as through the name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.core.pixels import to_tensor
from patchkit.errors import UsageError


@dataclass(frozen=True)
class InversionBudget:
    """The fixed, documented budget of mscore/1's capacity probe (docs/mscore.md)."""

    steps: int = 150
    learning_rate: float = 5e-3
    batch_size: int = 4
    placeholder: str = "<concept>"


def invert_token(
    pipe: Any,
    images: Sequence[Image.Image],
    template: str,
    *,
    budget: InversionBudget,
    seed: int,
    on_step: Callable[[int], None] | None = None,
) -> Any:
    """A copy of `pipe` whose tokenizer knows `budget.placeholder`, learnt from `images`.

    Only the new token's embedding row is trained; the pipeline passed in is not changed.
    `template` holds "{}" where the placeholder goes, e.g. "a photo of {}".
    """
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise UsageError(
            "textual inversion (score --capacity, forget --ti) supports SD 1.x and 2.x so far",
            hint="leave out --capacity / --ti for SDXL",
        )
    generator = torch.Generator().manual_seed(seed)
    tokenizer = copy.deepcopy(pipe.tokenizer)
    text_encoder = copy.deepcopy(pipe.text_encoder)
    tokenizer.add_tokens([budget.placeholder])
    token_id = tokenizer.convert_tokens_to_ids(budget.placeholder)
    text_encoder.resize_token_embeddings(len(tokenizer))
    embeddings = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        embeddings[token_id] = embeddings[:-1].mean(0)
    frozen = embeddings.detach().clone()
    text_encoder.requires_grad_(False)
    embeddings.requires_grad_(True)
    optimizer = torch.optim.AdamW([embeddings], lr=budget.learning_rate, weight_decay=0.0)

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean * pipe.vae.config.scaling_factor
    ids = tokenizer(
        template.format(budget.placeholder),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    scheduler = pipe.scheduler
    prediction = scheduler.config.get("prediction_type", "epsilon")
    pipe.unet.requires_grad_(False)
    for step in range(budget.steps):
        pick = torch.randint(0, latents.shape[0], (budget.batch_size,), generator=generator)
        clean = latents[pick]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (budget.batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        states = text_encoder(ids.expand(budget.batch_size, -1))[0]
        predicted = pipe.unet(noisy, timesteps, states).sample
        target = scheduler.get_velocity(clean, noise, timesteps) if prediction == "v_prediction" else noise
        loss = F.mse_loss(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # every row but the new token's stays as it was
            keep = torch.ones(embeddings.shape[0], dtype=torch.bool)
            keep[token_id] = False
            embeddings[keep] = frozen[keep]
        if on_step:
            on_step(step + 1)
    text_encoder.requires_grad_(False)
    extra = {"requires_safety_checker": False} if "safety_checker" in pipe.components else {}
    inverted = type(pipe)(**{**pipe.components, "tokenizer": tokenizer, "text_encoder": text_encoder}, **extra)
    inverted.set_progress_bar_config(disable=True)
    return inverted


def learnt_embedding(pipe: Any, placeholder: str) -> torch.Tensor:
    """The embedding row `invert_token` learnt for `placeholder`, as a standalone tensor."""
    token_id = pipe.tokenizer.convert_tokens_to_ids(placeholder)
    return pipe.text_encoder.get_input_embeddings().weight[token_id].detach().clone()
