"""What a forget holds in place: the retain prompts, from every source, with where each came from.

By default (docs/forget.md, "What is preserved"), on any model:
- `generic`: patchkit's fixed everyday captions (patchkit.core.retain_set);
- `neighbours`: the concept's nearest words in the model's own text encoder, each put in
  the concept's own training templates ("a photo of a {}" with "ring" for "circle");
- `world`: the other concepts of a world patchkit knows (the testbed's, in templates that
  its bench never scores with);
plus `given`: the user's --retain and --retain-file prompts. Any prompt that names a
concept being forgotten is left out, whatever its source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from patchkit.core.retain_set import GENERIC_RETAIN
from patchkit.core.world import World
from patchkit.training.prompts import Concept, is_about, world_retain_prompts

NEIGHBOURS_PER_CONCEPT = 16


@dataclass(frozen=True)
class RetainSet:
    """The prompts, by source in order. Each training step draws its retain rows uniformly
    from all of them (an equal share per source measured no better on the tuning split)."""

    prompts: list[str]
    sources: dict[str, int] = field(default_factory=dict)  # source -> prompts it added, in order


def neighbour_prompts(pipe: Any, concepts: Sequence[Concept], templates: dict[int, list[str]]) -> list[str]:
    """Each concept's nearest words in the model, in that concept's training templates."""
    from patchkit.backend.neighbours import WordIndex

    exclude = {w for c in concepts for part in (c.name, c.context or "") for w in part.split()}
    index_of_words = WordIndex(pipe, exclude)
    prompts = []
    for index, concept in enumerate(concepts):
        words = index_of_words.nearest(concept.name, NEIGHBOURS_PER_CONCEPT)
        for word in words:
            prompts += [t.format(word) for t in templates[index]]
    return prompts


def retain_set(
    world: World,
    concepts: Sequence[Concept],
    templates: dict[int, list[str]],
    given: Sequence[str],
    *,
    defaults: bool,
    pipe: Any,
) -> RetainSet:
    """The run's retain prompts in a fixed order, without duplicates or prompts about the concepts."""
    parts: list[tuple[str, list[str]]] = [("given", list(given))]
    if defaults:
        parts += [
            ("world", world_retain_prompts(world, concepts)),
            ("neighbours", neighbour_prompts(pipe, concepts, templates)),
            ("generic", list(GENERIC_RETAIN)),
        ]
    seen: set[str] = set()
    prompts: list[str] = []
    sources: dict[str, int] = {}
    for source, candidates in parts:
        added = 0
        for prompt in candidates:
            if prompt in seen or (source != "given" and is_about(prompt, concepts)):
                continue
            seen.add(prompt)
            prompts.append(prompt)
            added += 1
        if added:
            sources[source] = added
    return RetainSet(prompts, sources)
