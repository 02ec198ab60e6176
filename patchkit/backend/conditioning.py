"""Text conditioning for a UNet call, for every family: SD 1.x/2.x states, and SDXL's extras.

SDXL's UNet also takes the pooled embedding of its second text encoder and the
"time ids" (original size, crop, target size). Training code handles a `Conditioning`
and slices it by rows, without knowing which family it drives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Conditioning:
    ids: torch.Tensor  # (prompts, tokens) ids of the first tokenizer: where each concept sits
    states: torch.Tensor  # (prompts, tokens, width) what cross-attention keys and values read
    pooled: torch.Tensor | None = None  # SDXL only
    time_ids: torch.Tensor | None = None  # SDXL only

    def rows(self, index: Sequence[int] | torch.Tensor) -> Conditioning:
        pick = torch.as_tensor(index, dtype=torch.long)
        return Conditioning(
            self.ids[pick],
            self.states[pick],
            None if self.pooled is None else self.pooled[pick],
            None if self.time_ids is None else self.time_ids[pick],
        )

    def cat(self, other: Conditioning) -> Conditioning:
        return concat([self, other])


def concat(parts: Sequence[Conditioning]) -> Conditioning:
    """The rows of every part, in order: one UNet call for several batches."""

    def join(fields: list[torch.Tensor | None]) -> torch.Tensor | None:
        present = [f for f in fields if f is not None]
        return torch.cat(present) if len(present) == len(fields) else None

    return Conditioning(
        torch.cat([p.ids for p in parts]),
        torch.cat([p.states for p in parts]),
        join([p.pooled for p in parts]),
        join([p.time_ids for p in parts]),
    )


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def encode(pipe: Any, prompts: Sequence[str], *, trainable: bool = False) -> Conditioning:
    """Text-encoder outputs for `prompts`: frozen (computed once) unless `trainable`, where
    gradients flow back into the encoders (textual inversion trains an embedding row)."""
    ids = pipe.tokenizer(
        list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids  # fmt: skip
    with contextlib.nullcontext() if trainable else torch.no_grad():
        if not is_sdxl(pipe):
            return Conditioning(ids, pipe.text_encoder(ids)[0])
        states, _, pooled, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False)
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=states.dtype).repeat(len(prompts), 1)
        return Conditioning(ids, states, pooled, time_ids)


def predict(unet: Any, noisy: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The UNet's output (noise, or v for v-prediction models) under `cond`."""
    extra = {}
    if cond.pooled is not None:
        extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
    sample: torch.Tensor = unet(noisy, t, cond.states, **extra).sample
    return sample
