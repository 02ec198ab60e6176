"""The closed-form forget: which text states to move where, and which to hold (docs/closed-form.md).

For every training prompt and its anchor (the prompt without the concept, or with the
target in its place), encoded by the model's own text encoder:
- the concept's tokens move to the anchor's state where the concept was: its target's
  tokens for a correction; for a forget, the state of what now follows the prompt's
  prefix (the next word, or end-of-text);
- every later position (the rest of the prompt, end-of-text and padding, which a causal
  encoder lets carry the concept) moves to the anchor's state at the same place after it;
- the positions before the concept are the anchor's own states, so they are held.
Every position of every retain prompt is held. The states then go to core.closed_form.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from patchkit.backend.protocols import Tokenizer
from patchkit.backend.text_side import TextSide
from patchkit.core.closed_form import Grams, Regulariser, adversarial_states, low_rank_deltas, state_map
from patchkit.core.tokens import concept_positions
from patchkit.errors import UsageError
from patchkit.training.prompts import Concept, TrainingPrompt
from patchkit.training.settings import ClosedFormSettings


@dataclass(frozen=True)
class ClosedFormOutcome:
    tensors: dict[str, torch.Tensor]
    seconds: float  # encode, solve and factorise; loading excluded
    factorisation_error: float
    edited_states: int
    preserved_states: int


def aligned_position(position: int, concept: Sequence[int], anchor_span: Sequence[int], length: int) -> int:
    """Where the anchor holds what prompt `position` should read as (module docstring)."""
    start, end = concept[0], concept[-1] + 1
    if position < start:
        return position
    if position < end:
        if anchor_span:
            return anchor_span[min(position - start, len(anchor_span) - 1)]
        return start
    shift = (end - start) - len(anchor_span)
    return min(length - 1, max(0, position - shift))


def _token_ids(tokenizer: Tokenizer, words: str) -> list[int]:
    ids: list[int] = tokenizer(words, add_special_tokens=False).input_ids
    return ids


def _span_of(tokenizer: Tokenizer, ids: list[int], words: str) -> list[int]:
    """The positions of the first occurrence of `words` in `ids` (empty when absent)."""
    wanted = _token_ids(tokenizer, words)
    found = concept_positions(ids, wanted)
    return list(range(found[0], found[0] + len(wanted))) if found else []


@dataclass
class ConceptStates:
    """The states of the concept's own tokens and where they move: what adversarial rounds start from."""

    sources: list[torch.Tensor]
    targets: list[torch.Tensor]


def _ends(encoder: TextSide, ids: torch.Tensor, positions: str) -> list[int]:
    """How many leading positions of each prompt the solve reads (docs/closed-form.md, --positions)."""
    if positions == "context":
        return [int(ids.shape[1])] * int(ids.shape[0])
    return [int(n) for n in encoder.used_positions(ids)]


def gather(
    encoder: TextSide,
    concepts: Sequence[Concept],
    items: Sequence[TrainingPrompt],
    retain: Sequence[str],
    guidance: float,
    named: ConceptStates | None = None,
    positions: str = "context",
) -> Grams:
    """The sums of the run's moved, target and held states (module docstring).

    Every distinct prompt is encoded once, in memory-bounded groups that run through the
    encoder layer by layer. `positions` is "context" (every position the model reads,
    padding included, as UCE does) or "prompt" (through each prompt's end-of-text only).
    With `named`, the concept tokens' own states and targets are kept there as well."""
    tokenizer = encoder.tokenizer
    grams = Grams(encoder.width)
    prompt_ids = encoder.ids([it.prompt for it in items])
    ends = _ends(encoder, prompt_ids, positions)
    anchor_texts = sorted({it.anchor for it in items})  # a forget's anchors repeat across concepts
    anchor_row = {text: row for row, text in enumerate(anchor_texts)}
    anchor_ids = encoder.ids(anchor_texts)
    spans: list[list[int]] = []
    target_spans: list[list[int]] = []
    for row, item in enumerate(items):  # every prompt checked before anything is encoded
        concept = concepts[item.concept]
        span = _span_of(tokenizer, prompt_ids[row].tolist(), item.phrase or concept.name)
        if not span or span[-1] >= ends[row]:
            raise UsageError(
                f'"{concept.name}" does not occur in "{item.prompt}" after tokenization',
                hint="check the spelling, or give --prompt templates the model reads whole",
            )
        spans.append(span)
        anchor_tokens = anchor_ids[anchor_row[item.anchor]].tolist()
        target_spans.append(_span_of(tokenizer, anchor_tokens, concept.target) if concept.target else [])
    # where the anchor's target is longer than the concept, its states run past the prompt's
    reach = max((len(t) - len(s) for s, t in zip(spans, target_spans, strict=True)), default=0)
    anchor_length = min(int(prompt_ids.shape[1]), max(ends, default=1) + max(0, reach))
    anchors = encoder.encode(anchor_texts, anchor_length).states
    for rows, states in encoder.encode_groups([it.prompt for it in items], ends, prompt_ids):
        sources: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        for k, row in enumerate(rows):
            item, span, own = items[row], spans[row], states[k]
            grams.add_held(own[: span[0]])
            aligned = [aligned_position(p, span, target_spans[row], anchor_length) for p in range(span[0], ends[row])]
            source = own[span[0] : ends[row]]
            anchor = anchors[anchor_row[item.anchor], aligned]
            # a forget aims past the anchor, as FMN's negative guidance does; a correction aims at its target
            eta = 0.0 if concepts[item.concept].target else guidance
            target = anchor + eta * (anchor - source)
            sources.append(source)
            targets.append(target)
            if named is not None:
                named.sources += list(source[: span[-1] + 1 - span[0]])
                named.targets += list(target[: span[-1] + 1 - span[0]])
        grams.add_edits(torch.cat(sources), torch.cat(targets))
    held_ids = encoder.ids(list(retain)) if retain else torch.zeros(0, 1, dtype=torch.long)
    held_ends = _ends(encoder, held_ids, positions)
    for rows, states in encoder.encode_groups(list(retain), held_ends, held_ids):
        grams.add_held(torch.cat([states[k, : held_ends[row]] for k, row in enumerate(rows)]))
    return grams


def solve(
    encoder: TextSide,
    projections: Iterable[tuple[str, torch.Tensor]],
    concepts: Sequence[Concept],
    items: Sequence[TrainingPrompt],
    retain: Sequence[str],
    settings: ClosedFormSettings,
    progress: Callable[[str], None] | None = None,
) -> ClosedFormOutcome:
    """The patch's PEFT tensors for `projections` ((module name, weight), read one at a time)."""
    started = time.perf_counter()
    if progress:
        progress(f"encoding {len(items)} training prompts, their anchors and {len(retain)} retain prompts")
    named = ConceptStates([], []) if settings.adversarial_rounds else None
    grams = gather(encoder, concepts, items, retain, settings.guidance, named, settings.positions)
    if progress:
        progress(f"solving for {grams.edited} moved and {grams.held} held states")
    regulariser = Regulariser(settings.preserve_weight, settings.ridge)
    g = state_map(grams, regulariser)
    if named is not None and named.sources:
        sources, targets = torch.stack(named.sources), torch.stack(named.targets)
        for round_ in range(settings.adversarial_rounds):
            if progress:
                progress(f"adversarial round {round_ + 1}: {len(sources)} states that still read as the concept")
            grams.add_edits(adversarial_states(sources, g).float(), targets)
            g = state_map(grams, regulariser)
    factors = low_rank_deltas(projections, g, settings.rank)
    return ClosedFormOutcome(factors.tensors, time.perf_counter() - started, factors.error, grams.edited, grams.held)
