"""Adversarial rounds: find the embedding that still draws the concept through the patch, and forget it too.

An edit of the cross-attention keys and values re-routes the concept's *name*; a token
embedding learnt on the concept's images through the patched model (the inversion of
attack/1, CCE's attack) finds other text states that draw it. Each round here plays that
attacker against the current patch (textual inversion on the forget's own training images,
never the bench's references, on seeds of its own), then trains the same adapters on, with
the concept's prompts also phrased through every token found so far (AdvUnlearn's
alternation, with the inversion as the adversary).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from patchkit.backend import lora_layers
from patchkit.core.progress import Progress
from patchkit.training.fmn import ForgetOutcome, train
from patchkit.training.prompts import Concept, TrainingPrompt, with_placeholders
from patchkit.training.settings import ForgetSettings

# Inversion seeds of the rounds: apart from the forget's own (2**40 up) and from attack/1's.
_ROUND_SEED = 70_000_000


@dataclass(frozen=True)
class Rounds:
    """What the rounds found: the placeholder tokens, by round, and the final outcome."""

    outcome: ForgetOutcome
    placeholders: list[dict[int, str]]
    pipe: Any


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "concept"


def adversarial_rounds(
    pipe: Any, concepts: Sequence[Concept], items: Sequence[TrainingPrompt], images: Sequence[Image.Image],
    owners: Sequence[int], retain: Sequence[str], templates: Mapping[int, Sequence[str]], settings: ForgetSettings,
    first: ForgetOutcome, progress: Progress | None = None,
) -> Rounds:  # fmt: skip
    """`settings.adversarial_rounds` rounds after `first`: invert against the patch, train on."""
    from patchkit.backend.inversion import InversionBudget, invert_token

    started = time.perf_counter()
    outcome, found = first, []
    for round_index in range(settings.adversarial_rounds):
        placeholders: dict[int, str] = {}
        for index, concept in enumerate(concepts):
            if concept.target is not None:
                continue  # a correction has no concept to hide
            mine = [image for image, owner in zip(images, owners, strict=True) if owner == index]
            placeholder = f"<adv{round_index + 1}-{_slug(concept.name)}-{index}>"
            budget = InversionBudget(steps=settings.adversarial_steps, placeholder=placeholder)

            def step(done: int, name: str = concept.name, r: int = round_index) -> None:
                if progress:
                    progress(f"round {r + 1}: searching a token that draws {name} through the patch", done,
                             settings.adversarial_steps, {})  # fmt: skip

            with lora_layers.applied(pipe.unet, settings.modules, outcome.tensors, settings.rank):
                pipe = invert_token(pipe, mine, templates[index][0], budget=budget,
                                    seed=_ROUND_SEED + 1000 * round_index + index, on_step=step)  # fmt: skip
            placeholders[index] = placeholder
        found.append(placeholders)
        phrased = list(items)
        for earlier in found:
            phrased += with_placeholders(items, concepts, earlier)[len(items) :]
        more = replace(settings, steps=settings.adversarial_train_steps, seed=settings.seed + round_index + 1)
        outcome = train(pipe, concepts, phrased, images, owners, retain, more, progress, initial=outcome.tensors)
    # the rounds' inversions are training time too
    return Rounds(replace(outcome, seconds=first.seconds + time.perf_counter() - started), found, pipe)
