"""Image generation with a loaded pipeline: one seed per image, batched.

Each image gets its own torch.Generator, so an image depends on its prompt and seed
only, not on the batch it was generated in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 25
    guidance: float = 5.0
    batch_size: int = 16


def generate(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings: SamplerSettings,
    on_batch: Callable[[int], None] | None = None,
) -> list[Image.Image]:
    """One image per (prompt, seed); `on_batch(n)` is called after each batch of n images."""
    if len(prompts) != len(seeds):
        raise ValueError("prompts and seeds differ in length")
    images: list[Image.Image] = []
    for start in range(0, len(prompts), settings.batch_size):
        chunk_prompts = list(prompts[start : start + settings.batch_size])
        chunk_seeds = seeds[start : start + settings.batch_size]
        generators = [torch.Generator().manual_seed(int(s)) for s in chunk_seeds]
        with torch.no_grad():
            out = pipe(
                chunk_prompts,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                generator=generators,
                output_type="np",
            )
        images.extend(Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)) for a in out.images)
        if on_batch:
            on_batch(len(chunk_prompts))
    return images
