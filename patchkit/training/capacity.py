"""`forget --robust` (FMN): erase what the UNet can draw, not only what the concept's name calls up.

A key/value edit re-routes the name; attack/1's inversion learns a token through the patched
model and finds other text states that still draw the concept (0.72-1.00 on every testbed
concept, docs/attack.md). This trains against that attacker (docs/attack.md, "Erasing the
capacity"):

- adapters on the image pathway too (CapacitySettings.modules), so the edit can reach how
  the concept is drawn, not only which text states ask for it;
    forget        = MSE( patched(x_t, prompt), frozen(x_t, anchor) - g * (frozen(x_t, prompt) - frozen(x_t, anchor)) )
    unconditional = MSE( patched(x_t, ""),     frozen(x_t, "")     - g * (frozen(x_t, prompt) - frozen(x_t, "")) )
  on the concept's latents (ESD-u's target for the second: the concept is pushed out of the
  model's unconditional prediction, which any conditioning starts from);
    preserve      = MSE( patched(y_t, retain), frozen(y_t, retain) ) + MSE( patched(y_t, ""), frozen(y_t, "") )
  on the retain prompts' *own* images y (a plain forget distils them on the concept's
  latents, which keeps the UNet able to denoise the concept);
- adversarial rounds: the steps are split in `rounds + 1` parts; before each part after the
  first, a textual inversion through the current patch, on the forget's own training images
  (never a bench's references), learns a token per concept that still draws it, and the
  training goes on forgetting through every token found (AdvUnlearn's alternation, with
  the inversion as the adversary).

loss = forget + unconditional_weight * unconditional + preserve_weight * preserve.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.backend import conditioning, lora_layers
from patchkit.backend.inversion import InversionBudget, invert_token
from patchkit.backend.protocols import Pipeline
from patchkit.core.progress import Progress
from patchkit.training.fmn import ForgetOutcome, encode_latents
from patchkit.training.prompts import Concept, TrainingPrompt, with_placeholders
from patchkit.training.settings import CapacitySettings, ForgetSettings, training_noise_seed

# the rounds' inversions draw from here up: apart from the forget's other draws (2**40 + seed)
_ROUND_SEED_OFFSET = 1 << 20


def _template(items: Sequence[TrainingPrompt], concept: Concept, index: int) -> str:
    """The concept's first own phrasing, with "{}" where its name was: where its token is learnt."""
    first = next(it for it in items if it.concept == index and not it.quiet)
    return first.prompt.replace(concept.name, "{}", 1)


def _placeholder(concept: Concept, index: int, round_index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", concept.name.lower()).strip("-") or "concept"
    return f"<{slug}-{index}-round{round_index}>"


def erase_capacity(
    pipe: Pipeline, concepts: Sequence[Concept], items: Sequence[TrainingPrompt], images: Sequence[Image.Image],
    image_concepts: Sequence[int], retain_prompts: Sequence[str], retain_images: Sequence[Image.Image],
    settings: ForgetSettings, capacity: CapacitySettings, progress: Progress | None = None,
) -> ForgetOutcome:  # fmt: skip
    """Train the adapters (module list `capacity.modules`, rank `settings.rank`); `pipe` is left as it was."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(training_noise_seed(settings.seed))
    latents = encode_latents(pipe, images)
    kept_latents = encode_latents(pipe, retain_images)
    by_concept = [[j for j, c in enumerate(image_concepts) if c == i] for i in range(len(concepts))]
    phrased = list(items)
    named = conditioning.encode(pipe, [it.prompt for it in phrased])
    anchored = conditioning.encode(pipe, [it.anchor for it in phrased])
    kept = conditioning.encode(pipe, list(retain_prompts[: len(retain_images)]))
    unet, scheduler = pipe.unet, pipe.scheduler
    unet.requires_grad_(False)
    adapters = lora_layers.inject(unet, capacity.modules, settings.rank, settings.seed)
    params = lora_layers.parameters(adapters)
    optimizer = torch.optim.AdamW(params, lr=capacity.learning_rate, weight_decay=0.0)
    batch, horizon = settings.batch_size, scheduler.config.num_train_timesteps
    blank = conditioning.encode(pipe, [""] * batch)
    per_part = max(1, capacity.steps // (capacity.rounds + 1))
    first = last = 0.0
    try:
        for step in range(capacity.steps):
            round_index = step // per_part
            if capacity.rounds and step and step % per_part == 0 and round_index <= capacity.rounds:
                pipe = _invert_round(pipe, concepts, items, images, image_concepts, settings, capacity, round_index,
                                     progress)  # fmt: skip
                for param in params:  # the inversion froze the whole UNet, these adapters included
                    param.requires_grad_(True)
                found = {i: _placeholder(c, i, round_index) for i, c in enumerate(concepts)}
                phrased += with_placeholders(items, concepts, found)[len(items) :]
                named = conditioning.encode(pipe, [it.prompt for it in phrased])
                anchored = conditioning.encode(pipe, [it.anchor for it in phrased])
            rows = torch.randint(0, len(phrased), (batch,), generator=generator)
            owners = [by_concept[phrased[r].concept] for r in rows.tolist()]
            picks = [o[int(torch.randint(0, len(o), (1,), generator=generator))] for o in owners]
            t = torch.randint(0, horizon, (batch,), generator=generator)
            noisy = scheduler.add_noise(latents[picks], torch.randn(latents[picks].shape, generator=generator), t)
            others = torch.randint(0, kept_latents.shape[0], (batch,), generator=generator)
            t_kept = torch.randint(0, horizon, (batch,), generator=generator)
            clean_kept = kept_latents[others]
            noisy_kept = scheduler.add_noise(clean_kept, torch.randn(clean_kept.shape, generator=generator), t_kept)
            with torch.no_grad(), lora_layers.disabled(adapters):
                concept_out = conditioning.predict(unet, noisy, t, named.rows(rows))
                anchor_out = conditioning.predict(unet, noisy, t, anchored.rows(rows))
                blank_out = conditioning.predict(unet, noisy, t, blank)
                kept_out = conditioning.predict(unet, noisy_kept, t_kept, kept.rows(others))
                kept_blank = conditioning.predict(unet, noisy_kept, t_kept, blank)
            g = capacity.guidance
            forget = F.mse_loss(conditioning.predict(unet, noisy, t, named.rows(rows)),
                                anchor_out - g * (concept_out - anchor_out))  # fmt: skip
            unconditional = F.mse_loss(conditioning.predict(unet, noisy, t, blank),
                                       blank_out - g * (concept_out - blank_out))  # fmt: skip
            preserve = F.mse_loss(conditioning.predict(unet, noisy_kept, t_kept, kept.rows(others)), kept_out)
            preserve = preserve + F.mse_loss(conditioning.predict(unet, noisy_kept, t_kept, blank), kept_blank)
            loss = forget + capacity.unconditional_weight * unconditional + settings.preserve_weight * preserve
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            last = float(loss.detach())
            first = last if step == 0 else first
            if progress:
                progress("erasing the capacity", step + 1, capacity.steps, {"loss": last})
        tensors, _ = lora_layers.peft_state(adapters, settings.rank)
    finally:
        lora_layers.remove(unet, adapters)
        unet.requires_grad_(False)
    return ForgetOutcome(tensors, first, last, time.perf_counter() - started, None)


def _invert_round(
    pipe: Pipeline, concepts: Sequence[Concept], items: Sequence[TrainingPrompt], images: Sequence[Image.Image],
    image_concepts: Sequence[int], settings: ForgetSettings, capacity: CapacitySettings, round_index: int,
    progress: Progress | None,
) -> Pipeline:  # fmt: skip
    """One adversarial round: per concept, a token learnt through the model as it is now (adapters on)."""
    for index, concept in enumerate(concepts):
        mine = [image for image, owner in zip(images, image_concepts, strict=True) if owner == index]
        earlier = _placeholder(concept, index, round_index - 1) if capacity.warm_start and round_index > 1 else None
        budget = InversionBudget(steps=capacity.inversion_steps, placeholder=_placeholder(concept, index, round_index),
                                 start_from=earlier)  # fmt: skip

        def step(done: int, name: str = concept.name) -> None:
            if progress:
                progress(f"round {round_index} of {capacity.rounds}: a token that still draws {name}", done,
                         capacity.inversion_steps, {})  # fmt: skip

        seed = training_noise_seed(settings.seed) + _ROUND_SEED_OFFSET + 1000 * round_index + index
        pipe = invert_token(pipe, mine, _template(items, concept, index), budget=budget, seed=seed, on_step=step)
    return pipe
