"""The Forget-Me-Not loop: re-steer cross-attention away from a concept, into a low-rank patch.

Loss per step (docs/forget.md has the why and the measured trade-off):
    attention = mean over attn2 layers of || attention probabilities at the concept's positions ||_2
    anchor    = MSE( patched(x_t, concept prompt),
                     frozen(x_t, anchor) - eta * (frozen(x_t, concept prompt) - frozen(x_t, anchor)) )
    preserve  = MSE( patched(x_t, retain prompt), frozen(x_t, retain prompt) )
    held      = mean over adapted projections W of || dW C ||_F^2 / || W C ||_F^2,
                C every retain prompt's text states, every position (HeldStates)
    loss      = attention_weight * attention + anchor_weight * anchor + preserve_weight * preserve
                + held_state_weight * held
For a correction eta is 0 and the anchor is the prompt with the target concept in place.
Only adapters on the chosen projections train; images are VAE-encoded once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.backend import conditioning, lora_layers
from patchkit.backend.attention import record_cross_attention
from patchkit.backend.protocols import Pipeline, Scheduler, Tokenizer
from patchkit.core.pixels import to_tensor
from patchkit.core.progress import Progress
from patchkit.core.tokens import concept_positions, end_of_text_positions
from patchkit.errors import UsageError
from patchkit.training.prompts import Concept, TrainingPrompt
from patchkit.training.settings import ForgetSettings, training_noise_seed


@dataclass(frozen=True)
class ForgetOutcome:
    tensors: dict[str, torch.Tensor]
    first_loss: float
    last_loss: float
    seconds: float
    factorisation_error: float | None  # relative Frobenius error of the SVD export (--full only)


def position_mask(
    tokenizer: Tokenizer, ids: torch.Tensor, prompts: Sequence[str], names: Sequence[str], use_pooler: Sequence[bool]
) -> torch.Tensor:
    """(prompts, tokens) bool mask of the positions to re-steer; refuses a concept that is not found.

    `use_pooler[i]` also marks the end-of-text positions after the concept in prompt i.
    """
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    eos = tokenizer.eos_token_id
    for row, (prompt, name, pooler) in enumerate(zip(prompts, names, use_pooler, strict=True)):
        concept_ids = tokenizer(name, add_special_tokens=False).input_ids
        found = concept_positions(ids[row].tolist(), concept_ids)
        if not found:
            raise UsageError(
                f'"{name}" does not occur in the prompt "{prompt}" after tokenization',
                hint="check the spelling, or that the tokenizer keeps it whole (patchkit info shows the model)",
            )
        if pooler:
            found += end_of_text_positions(ids[row].tolist(), eos, after=max(found))
        mask[row, found] = True
    return mask


def attention_loss(maps: Sequence[torch.Tensor], mask: torch.Tensor, batch: int) -> torch.Tensor:
    """Mean over layers of the L2 norm of the probabilities that land on masked tokens.

    Each map is (batch * heads, queries, tokens), batch-major; the forward may carry more
    prompts than `mask` has rows (retain prompts ride along), and only the first ones count.
    """
    total = torch.zeros(())
    rows = mask.shape[0]
    for probs in maps:
        heads = probs.shape[0] // batch
        mine = probs[: rows * heads]
        selected = mine * mask.repeat_interleave(heads, dim=0)[:, None, :]
        total = total + selected.pow(2).sum().sqrt() / mine.shape[0]
    return total / max(1, len(maps))


def encode_latents(pipe: Pipeline, images: Sequence[Image.Image]) -> torch.Tensor:
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        encoded: torch.Tensor = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean
    return encoded * float(pipe.vae.config.scaling_factor)


@dataclass(frozen=True)
class _Draw:
    """One step's random choices: prompt rows, a latent for each, noise, timesteps and retain rows."""

    rows: torch.Tensor
    picks: list[int]
    noise: torch.Tensor
    t: torch.Tensor
    keep: torch.Tensor | None

    def conditioning(
        self, prompts: conditioning.Conditioning, retain: conditioning.Conditioning | None
    ) -> conditioning.Conditioning:
        """The trained forward's prompts: the step's concept rows, then its retain rows."""
        cond = prompts.rows(self.rows)
        return cond if retain is None or self.keep is None else cond.cat(retain.rows(self.keep))

    def unet_inputs(self, latents: torch.Tensor, scheduler: Scheduler, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's noisy latents and timesteps, repeated to match `rows` prompt rows."""
        noisy = scheduler.add_noise(latents[self.picks], self.noise, self.t)
        copies = rows // len(self.rows)
        return torch.cat([noisy] * copies), self.t.repeat(copies)


def _draw_steps(
    steps: int,
    batch: int,
    items: Sequence[TrainingPrompt],
    by_concept: dict[int, list[int]],
    retain_rows: int,
    latent_shape: Sequence[int],
    timesteps: int,
    generator: torch.Generator,
) -> list[_Draw]:
    """Every step's draws up front, in the order a step-at-a-time loop makes them: the frozen
    model can then run over several steps in one batch, and a seed still gives the same patch."""
    draws = []
    for _ in range(steps):
        rows = torch.randint(0, len(items), (batch,), generator=generator)
        owners = [by_concept[items[r].concept] for r in rows.tolist()]
        picks = [o[int(torch.randint(0, len(o), (1,), generator=generator))] for o in owners]
        noise = torch.randn((batch, *latent_shape), generator=generator)
        t = torch.randint(0, timesteps, (batch,), generator=generator)
        keep = torch.randint(0, retain_rows, (batch,), generator=generator) if retain_rows else None
        draws.append(_Draw(rows, picks, noise, t, keep))
    return draws


# Latent elements per frozen forward. Small models are dominated by per-call overhead, so
# several steps share one call; at SD 1.5 sizes one step's batch already exceeds this.
_FROZEN_BATCH_ELEMENTS = 1 << 15


def _frozen_targets(
    unet: Any,
    adapters: dict[str, lora_layers.Adapter],
    draws: Sequence[_Draw],
    latents: torch.Tensor,
    scheduler: Scheduler,
    prompts: conditioning.Conditioning,
    anchors: conditioning.Conditioning,
    retain: conditioning.Conditioning | None,
    eta: torch.Tensor,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per step, the frozen model's (anchor target, retain outputs), computed a few steps at a time.

    Per step the frozen batch is the concept prompts, the retain prompts and the anchors, all
    on the step's noisy latents: target = anchor - eta * (concept - anchor).
    """
    per_step = len(draws[0].rows) * (3 if retain is not None else 2) if draws else 1
    chunk = max(1, _FROZEN_BATCH_ELEMENTS // (per_step * latents[0].numel()))
    for start in range(0, len(draws), chunk):
        group = draws[start : start + chunk]
        noisy, t, conds = [], [], []
        for draw in group:
            cond = draw.conditioning(prompts, retain).cat(anchors.rows(draw.rows))
            step_noisy, step_t = draw.unet_inputs(latents, scheduler, cond.ids.shape[0])
            noisy.append(step_noisy)
            t.append(step_t)
            conds.append(cond)
        with torch.no_grad(), lora_layers.disabled(adapters):
            frozen = conditioning.predict(unet, torch.cat(noisy), torch.cat(t), conditioning.concat(conds))
        for draw, step_frozen in zip(group, frozen.split([len(c.ids) for c in conds]), strict=True):
            batch = len(draw.rows)
            concept, anchor = step_frozen[:batch], step_frozen[-batch:]
            weight = eta[draw.rows].view(-1, *([1] * (concept.dim() - 1)))
            rest = step_frozen[batch:-batch] if draw.keep is not None else None
            yield anchor - weight * (concept - anchor), rest


class HeldStates:
    """The retain prompts' text states as a second moment, for the held-states term.

    What a projection W makes of states C is held when dW C is small; ||dW C||_F^2 is
    tr(dW S dW^T) with S = C^T C, so one (width x width) matrix stands for every retain
    prompt at every position, whatever their number, and each step costs rank x width^2 per
    projection. Each projection's drift is relative to ||W C||_F^2, so layers of different
    scale weigh alike.
    """

    def __init__(self, states: torch.Tensor, adapters: dict[str, lora_layers.Adapter]) -> None:
        flat = states.reshape(-1, states.shape[-1]).double()
        self.moment = (flat.T @ flat / flat.shape[0]).float()
        self.energy = {name: float(_quadratic(a.base.weight.detach(), self.moment)) for name, a in adapters.items()}

    def drift(self, adapters: dict[str, lora_layers.Adapter]) -> torch.Tensor:
        total = torch.zeros(())
        for name, adapter in adapters.items():
            if isinstance(adapter, lora_layers.LoRALinear):
                # tr(B A S A^T B^T) through the small r x r matrix A S A^T
                inner = adapter.lora_A @ self.moment @ adapter.lora_A.T
                change = ((adapter.lora_B @ inner) * adapter.lora_B).sum()
            else:
                change = _quadratic(adapter.delta, self.moment)
            total = total + change / max(self.energy[name], 1e-12)
        return total / max(1, len(adapters))


def _quadratic(weight: torch.Tensor, moment: torch.Tensor) -> torch.Tensor:
    """tr(W S W^T): with S the second moment of some states, the mean squared norm of W's outputs on them."""
    return ((weight @ moment) * weight).sum()


def guidance_for(settings: ForgetSettings, item: TrainingPrompt, concept: Concept) -> float:
    """The negative guidance eta of one training prompt: 0 for a correction (its anchor is the target),
    `added_phrasing_guidance` in a phrasing --every-template added, else `negative_guidance`."""
    if concept.target is not None:
        return 0.0
    if item.quiet and settings.added_phrasing_guidance is not None:
        return settings.added_phrasing_guidance
    return settings.negative_guidance


def train(
    pipe: Pipeline,
    concepts: Sequence[Concept],
    items: Sequence[TrainingPrompt],
    images: Sequence[Image.Image],
    image_concepts: Sequence[int],
    retain_prompts: Sequence[str],
    settings: ForgetSettings,
    progress: Progress | None = None,
) -> ForgetOutcome:
    """Train the adapters and return them in PEFT key format; `pipe` is left as it was."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(training_noise_seed(settings.seed))
    prompts = conditioning.encode(pipe, [item.prompt for item in items])
    anchors = conditioning.encode(pipe, [item.anchor for item in items])
    holding = settings.preserve_weight > 0 or settings.held_state_weight > 0
    retained = conditioning.encode(pipe, retain_prompts) if retain_prompts and holding else None
    retain = retained if settings.preserve_weight > 0 else None  # the UNet-side preserve term's prompts
    mask = position_mask(
        pipe.tokenizer,
        prompts.ids,
        [item.prompt for item in items],
        [item.phrase or concepts[item.concept].name for item in items],
        # a causal encoder's end-of-text tokens carry the whole prompt, the context included: a
        # disentanglement that re-steered them would lose the context too (docs/forget.md)
        [settings.use_pooler and concepts[item.concept].context is None for item in items],
    )
    # eta per prompt (guidance_for): how far past its anchor the target is pushed, away from the concept
    eta = torch.tensor([guidance_for(settings, item, concepts[item.concept]) for item in items])
    latents = encode_latents(pipe, images)
    by_concept = {i: [j for j, c in enumerate(image_concepts) if c == i] for i in range(len(concepts))}
    scheduler, unet = pipe.scheduler, pipe.unet
    unet.requires_grad_(False)
    adapters = lora_layers.inject(unet, settings.modules, settings.rank, settings.seed, full=settings.full)
    held = HeldStates(retained.states, adapters) if retained is not None and settings.held_state_weight > 0 else None
    batch = settings.batch_size
    draws = _draw_steps(settings.steps, batch, items, by_concept, 0 if retain is None else retain.ids.shape[0],
                        latents.shape[1:], scheduler.config.num_train_timesteps, generator)  # fmt: skip
    try:
        frozen = _frozen_targets(unet, adapters, draws, latents, scheduler, prompts, anchors, retain, eta)
        params = lora_layers.parameters(adapters)
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        first = last = 0.0
        for step, draw in enumerate(draws):
            target, frozen_rest = next(frozen)
            cond = draw.conditioning(prompts, retain)
            with record_cross_attention(unet) as recorder:
                out = conditioning.predict(unet, *draw.unet_inputs(latents, scheduler, cond.ids.shape[0]), cond)
                attention = attention_loss(recorder.maps, mask[draw.rows], cond.ids.shape[0])
            anchor = F.mse_loss(out[:batch], target)
            loss = settings.attention_weight * attention + settings.anchor_weight * anchor
            if frozen_rest is not None:
                loss = loss + settings.preserve_weight * F.mse_loss(out[batch:], frozen_rest)
            shown = {"attention": float(attention.detach())}
            if held is not None:
                drift = held.drift(adapters)
                loss = loss + settings.held_state_weight * drift
                shown["held drift"] = float(drift.detach())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            last = float(loss.detach())
            if step == 0:
                first = last
            if progress:
                progress("forgetting", step + 1, settings.steps, {"loss": last, **shown})
        tensors, error = lora_layers.peft_state(adapters, settings.rank)
    finally:
        lora_layers.remove(unet, adapters)
    return ForgetOutcome(tensors, first, last, time.perf_counter() - started, error)
