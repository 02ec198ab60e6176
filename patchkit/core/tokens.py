"""Locating a concept's tokens in a tokenized prompt, as the Forget-Me-Not reference does."""

from __future__ import annotations

from collections.abc import Sequence


def concept_positions(prompt_ids: Sequence[int], concept_ids: Sequence[int]) -> list[int]:
    """Every position covered by an occurrence of `concept_ids` in `prompt_ids` (all tokens of multi-token concepts)."""
    n = len(concept_ids)
    if n == 0:
        return []
    found: list[int] = []
    for start in range(len(prompt_ids) - n + 1):
        if list(prompt_ids[start : start + n]) == list(concept_ids):
            found.extend(range(start, start + n))
    return sorted(set(found))


def end_of_text_positions(prompt_ids: Sequence[int], eos_id: int, after: int) -> list[int]:
    """End-of-text positions after `after`: in SD 1.x padding *is* end-of-text, so all of them.

    A causal text encoder carries the concept into every later token, so the pooled
    end-of-text state ("use_pooler") and the padding after it all still name the concept.
    """
    return [i for i, token in enumerate(prompt_ids) if token == eos_id and i > after]
