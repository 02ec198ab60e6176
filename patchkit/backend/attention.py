"""Recording cross-attention probabilities: the quantity Forget-Me-Not re-steers.

Every `attn2` module gets diffusers' plain AttnProcessor (the one that materialises the
softmax), and its `get_attention_scores` is wrapped to keep each map it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor


class AttentionRecorder:
    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []

    def clear(self) -> None:
        self.maps.clear()


@contextmanager
def record_cross_attention(unet: Any) -> Iterator[AttentionRecorder]:
    """Within the block, every cross-attention call appends (batch*heads, queries, tokens) probs."""
    recorder = AttentionRecorder()
    patched = []
    for name, module in unet.named_modules():
        if not name.endswith("attn2"):
            continue
        patched.append((module, module.processor))
        module.set_processor(AttnProcessor())
        original = module.get_attention_scores

        def keep(query: torch.Tensor, key: torch.Tensor, mask: Any = None, _original: Any = original) -> torch.Tensor:
            probs: torch.Tensor = _original(query, key, mask)
            recorder.maps.append(probs)
            return probs

        module.get_attention_scores = keep
    try:
        yield recorder
    finally:
        for module, processor in patched:
            del module.get_attention_scores
            module.set_processor(processor)
