"""The Forget-Me-Not loop: re-steer cross-attention away from a concept, with a low-rank patch.

Loss per step (docs/forget.md):
    attention  = mean over attn2 layers of || attention probabilities at the concept's positions ||_2
    preserve   = MSE( UNet+patch(x_t, t, retain prompt), frozen UNet(x_t, t, retain prompt) )
    loss       = attention + preserve_weight * preserve
Only the adapters on the chosen projections train; images are VAE-encoded once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.backend import lora_layers
from patchkit.backend.attention import record_cross_attention
from patchkit.core.pixels import to_tensor
from patchkit.core.progress import Progress
from patchkit.core.tokens import concept_positions, end_of_text_positions
from patchkit.errors import UsageError

TEMPLATES: dict[str, tuple[str, ...]] = {
    "id": ("a photo of {}", "a portrait of {}"),
    "object": ("a photo of a {}", "a {}"),
    "style": ("a painting in the style of {}", "a photo in the style of {}"),
    "nsfw": ("a photo of {}", "{}"),
}


@dataclass(frozen=True)
class Concept:
    name: str
    category: str


@dataclass(frozen=True)
class ForgetSettings:
    steps: int = 100
    learning_rate: float = 5e-3
    rank: int = 4
    use_pooler: bool = True
    preserve_weight: float = 1.0
    images_per_concept: int = 8
    batch_size: int = 4
    seed: int = 0
    modules: tuple[str, ...] = ("attn2.to_k", "attn2.to_v")


@dataclass(frozen=True)
class ForgetOutcome:
    tensors: dict[str, torch.Tensor]
    prompts: list[str]
    first_loss: float
    last_loss: float
    seconds: float


def pair_concepts(names: Sequence[str], categories: Sequence[str]) -> list[Concept]:
    """One category for every concept, or one per concept, in order."""
    if len(categories) not in (1, len(names)):
        raise UsageError(
            "give one --category for all concepts, or one per --concept", hint="--concept alice --category id"
        )
    paired = list(categories) * len(names) if len(categories) == 1 else list(categories)
    return [Concept(n, c) for n, c in zip(names, paired, strict=True)]


def training_prompts(concepts: Sequence[Concept]) -> list[tuple[int, str]]:
    for concept in concepts:
        if concept.category not in TEMPLATES:
            raise UsageError(f"unknown category {concept.category!r}", hint=f"use one of: {', '.join(TEMPLATES)}")
    return [(i, t.format(c.name)) for i, c in enumerate(concepts) for t in TEMPLATES[c.category]]


def _encode_prompts(pipe: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        states = pipe.text_encoder(tokens.input_ids)[0]
    return tokens.input_ids, states


def position_mask(
    pipe: Any, ids: torch.Tensor, prompts: Sequence[str], names: Sequence[str], use_pooler: bool
) -> torch.Tensor:
    """(prompts, tokens) bool mask of the positions to re-steer; refuses a concept that is not found."""
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    eos = pipe.tokenizer.eos_token_id
    for row, (prompt, name) in enumerate(zip(prompts, names, strict=True)):
        concept_ids = pipe.tokenizer(name, add_special_tokens=False).input_ids
        found = concept_positions(ids[row].tolist(), concept_ids)
        if not found:
            raise UsageError(
                f'"{name}" does not occur in the prompt "{prompt}" after tokenization',
                hint="check the spelling, or that the tokenizer keeps it whole (patchkit info shows the model)",
            )
        if use_pooler:
            found += end_of_text_positions(ids[row].tolist(), eos, after=max(found))
        mask[row, found] = True
    return mask


def _attention_loss(maps: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of the L2 norm of the probabilities that land on masked tokens."""
    total = torch.zeros(())
    for probs in maps:  # (batch * heads, queries, tokens)
        heads = probs.shape[0] // mask.shape[0]
        selected = probs * mask.repeat_interleave(heads, dim=0)[:, None, :]
        total = total + selected.pow(2).sum().sqrt() / probs.shape[0]
    return total / max(1, len(maps))


def train(
    pipe: Any,
    concepts: Sequence[Concept],
    images: Sequence[Image.Image],
    image_concepts: Sequence[int],
    retain_prompts: Sequence[str],
    settings: ForgetSettings,
    progress: Progress | None = None,
) -> ForgetOutcome:
    """Train the adapters and return them in PEFT key format; `pipe` is left as it was."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    prompts = training_prompts(concepts)
    prompt_ids, prompt_states = _encode_prompts(pipe, [p for _, p in prompts])
    mask = position_mask(
        pipe, prompt_ids, [p for _, p in prompts], [concepts[i].name for i, _ in prompts], settings.use_pooler
    )
    _, retain_states = _encode_prompts(pipe, retain_prompts) if retain_prompts else (None, None)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean * pipe.vae.config.scaling_factor
    by_concept = {i: [j for j, c in enumerate(image_concepts) if c == i] for i in range(len(concepts))}
    scheduler = pipe.scheduler
    unet = pipe.unet
    unet.requires_grad_(False)
    adapters = lora_layers.inject(unet, settings.modules, settings.rank, settings.seed)
    try:
        params = lora_layers.parameters(adapters)
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        first = last = 0.0
        for step in range(settings.steps):
            rows = torch.randint(0, len(prompts), (settings.batch_size,), generator=generator).tolist()
            picks = [
                by_concept[prompts[r][0]][
                    int(torch.randint(0, len(by_concept[prompts[r][0]]), (1,), generator=generator))
                ]
                for r in rows
            ]
            clean = latents[picks]
            noise = torch.randn(clean.shape, generator=generator)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (settings.batch_size,), generator=generator)
            noisy = scheduler.add_noise(clean, noise, t)
            with record_cross_attention(unet) as recorder:
                unet(noisy, t, prompt_states[rows])
                attention = _attention_loss(recorder.maps, mask[rows])
            loss = attention
            if retain_states is not None and settings.preserve_weight > 0:
                keep = torch.randint(0, retain_states.shape[0], (settings.batch_size,), generator=generator)
                with torch.no_grad(), lora_layers.disabled(adapters):
                    target = unet(noisy, t, retain_states[keep]).sample
                loss = loss + settings.preserve_weight * F.mse_loss(unet(noisy, t, retain_states[keep]).sample, target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            last = float(loss.detach())
            if step == 0:
                first = last
            if progress:
                progress("forgetting", step + 1, settings.steps, {"loss": last, "attention": float(attention.detach())})
        tensors = lora_layers.peft_state(adapters)
    finally:
        lora_layers.remove(unet, adapters)
    return ForgetOutcome(tensors, [p for _, p in prompts], first, last, time.perf_counter() - started)
