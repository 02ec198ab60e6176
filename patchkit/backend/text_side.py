"""A model's text side alone: its tokenizer(s) and text encoder(s), and the states its UNet reads.

The closed-form method needs no UNet forward, no VAE and no images: only the states every
cross-attention layer reads, and the attn2 projections (read as spans by the caller). So
the encoders are streamed from their tensors' byte spans, a layer at a time, for a
diffusers folder and a single-file checkpoint alike, and diffusers is never imported.

The encoders run on patchkit's own CLIP forward (backend.clip_text: transformers' model
import alone cost 8 s of a 10.75 s run); the tokenizers are transformers'. The states are
those diffusers' pipelines hand the UNet: SD 1.x and 2.x the text encoder's
last hidden state; SDXL the second-to-last hidden states of both encoders, side by side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchkit.backend.clip_text import ClipTextEncoder
from patchkit.errors import ModelMismatchError
from patchkit.io.tensor_spans import SpanReader, TensorSpan

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

_ENCODERS = ("text_encoder", "text_encoder_2")
# floats of states one encoder call returns (256 MiB): a group of prompts runs through every
# layer together, each layer's weights read once per group, so a 100-concept run reads its
# encoders a few times, not once per 64 prompts
_GROUP_FLOATS = 1 << 26


@dataclass(frozen=True)
class EncodedPrompts:
    ids: torch.Tensor  # (prompts, context) the first tokenizer's ids, padded to the model's context
    states: torch.Tensor  # (prompts, length, width) the cross-attention input at each computed position

    @property
    def length(self) -> int:
        """Positions computed: the encoder is causal, so a position's state needs only those before it."""
        return int(self.states.shape[1])


@dataclass(frozen=True)
class TextSide:
    tokenizer: Any
    text_encoder: ClipTextEncoder  # also what neighbour search reads the input embeddings of
    tokenizer_2: Any | None = None
    text_encoder_2: ClipTextEncoder | None = None

    @property
    def sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def ids(self, prompts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        tok = tokenizer or self.tokenizer
        ids: torch.Tensor = tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip
        return ids

    def encode(self, prompts: Sequence[str], length: int | None = None) -> EncodedPrompts:
        """The states of the first `length` positions of every prompt (all of them when None)."""
        ids = self.ids(prompts)
        width = ids.shape[1] if length is None else max(1, min(length, ids.shape[1]))
        states = torch.zeros(len(prompts), width, self.width)
        for rows, part in self.encode_groups(prompts, [width] * len(prompts), ids):
            states[rows] = part
        return EncodedPrompts(ids, states)

    def encode_groups(
        self, prompts: Sequence[str], lengths: Sequence[int], ids: torch.Tensor | None = None
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(rows, their states), a memory-bounded group of prompts at a time, shortest first.

        Row k of the states holds prompt rows[k]'s first lengths[rows[k]] positions (exact:
        the encoder is causal); its later positions are not computed and must not be read.
        `ids`, the prompts' `ids()` where the caller has them already, saves tokenizing twice.
        """
        ids = self.ids(prompts) if ids is None else ids
        order = sorted(range(len(prompts)), key=lambda row: (lengths[row], row))
        start = 0
        with torch.no_grad():
            while start < len(order):
                # as many prompts as fit the budget at the longest length they reach
                stop = start + 1
                while stop < len(order) and (stop + 1 - start) * lengths[order[stop]] * self.width <= _GROUP_FLOATS:
                    stop += 1
                rows = order[start:stop]
                length = max(1, lengths[rows[-1]])
                chunk = [prompts[row] for row in rows]
                yield rows, self._states(chunk, ids[rows, :length], [max(1, lengths[r]) for r in rows])
                start = stop

    def used_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Per prompt, the positions up to and including its first end-of-text (its context where none fits)."""
        eos = self.tokenizer.eos_token_id
        is_end = (ids == eos) & (torch.arange(ids.shape[1]) > 0)
        first = torch.where(is_end.any(1), is_end.float().argmax(1), torch.full((ids.shape[0],), ids.shape[1] - 1))
        return first + 1

    @property
    def width(self) -> int:
        first = int(self.text_encoder.config.hidden_size)
        return first + (int(self.text_encoder_2.config.hidden_size) if self.text_encoder_2 is not None else 0)

    def _states(self, prompts: list[str], ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        if self.text_encoder_2 is None:
            return self.text_encoder.states(ids, lengths=lengths)
        ids_2 = self.ids(prompts, self.tokenizer_2)[:, : ids.shape[1]]
        first = self.text_encoder.states(ids, penultimate=True, lengths=lengths)
        second = self.text_encoder_2.states(ids_2, penultimate=True, lengths=lengths)
        return torch.cat([first, second], dim=-1)


def load_text_side(config_folder: Path, configs: Mapping[str, dict[str, Any]],
                   spans: Mapping[str, Mapping[str, TensorSpan]]) -> TextSide:  # fmt: skip
    """Tokenizers from the config folder, encoders filled from `spans` in float32."""
    from transformers import CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    encoders: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    for component in _ENCODERS:
        if component not in configs:
            continue
        if component not in spans:
            raise ModelMismatchError(f"the model has a {component} config but no {component} weights",
                                     hint="check that the checkpoint and its --config are the same model")  # fmt: skip
        encoders[component] = _filled_encoder(component, configs[component], spans[component])
        folder = config_folder / component.replace("text_encoder", "tokenizer")
        tokenizers[component] = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if "text_encoder" not in encoders:
        raise ModelMismatchError("the model has no text encoder", hint="patchkit reads SD 1.x, 2.x and XL models")
    return TextSide(tokenizers["text_encoder"], encoders["text_encoder"],
                    tokenizers.get("text_encoder_2"), encoders.get("text_encoder_2"))  # fmt: skip


def _filled_encoder(component: str, config: dict[str, Any], spans: Mapping[str, TensorSpan]) -> ClipTextEncoder:
    missing = next((key for key in ClipTextEncoder.keys(config) if key not in spans), None)
    if missing is not None:
        raise ModelMismatchError(
            f"{component} has no tensor {missing}", hint="check that the checkpoint and its --config are the same model"
        )
    return ClipTextEncoder(config, SpanTensors(spans))


class SpanTensors(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by name, read from their byte spans when asked for, never kept:
    the encoder asks for one layer at a time, so its weights never sit in memory whole."""

    def __init__(self, spans: Mapping[str, TensorSpan]) -> None:
        self._spans = spans

    def __getitem__(self, key: str) -> torch.Tensor:
        with SpanReader() as reader:
            return reader.tensor(self._spans[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)
