"""A world: what a model's domain contributes to forgetting and scoring, as one value.

The testbed is one world, a user's ConceptBench another, and a model patchkit knows
nothing about gets the generic world (everyday prompt templates, nothing else). Services
receive a `World` and never ask which model they are looking at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Everyday phrasings per category; "{}" marks the concept. Used wherever a world has none.
GENERIC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "id": ("a photo of {}", "a portrait of {}", "{} smiling", "a close-up photo of {}"),
    "object": ("a photo of a {}", "a {}", "a {} on a table", "a close-up photo of a {}"),
    "style": (
        "a painting in the style of {}",
        "a city street in the style of {}",
        "a portrait in the style of {}",
        "a landscape in the style of {}",
    ),
    "nsfw": ("a photo of {}", "{}", "an image showing {}"),
}
CATEGORIES = tuple(GENERIC_TEMPLATES)
# Words that go with any concept, for attack/1's composition prompts ("a red circle").
GENERIC_MODIFIERS: tuple[str, ...] = ("red", "blue", "small", "old", "golden", "wooden")


@dataclass(frozen=True)
class World:
    """Prompt templates, the prompts of the concepts it knows, its bench and its judges."""

    name: str
    # training prompt templates per category; "{}" marks the concept
    templates: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(GENERIC_TEMPLATES))
    # the prompts that ask for each concept the world knows, by concept name: what holds the
    # neighbours of a forgotten concept in place
    concept_prompts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    bench: Path | None = None  # its ConceptBench file: `score`'s default
    judges: Path | None = None  # a folder of per-category classifier judges ("classifier" judge, captions)
    categories: tuple[str, ...] = CATEGORIES
    # what a disentanglement (--context) trains with, when `templates` never name a context;
    # None: `templates`, each prefixed with the context
    context_templates: Mapping[str, tuple[str, ...]] | None = None
    # attack/1: modifiers its composition prompts use, and descriptions of each concept that
    # avoid its name (the paraphrase attack), in words this world's models know
    modifiers: tuple[str, ...] = GENERIC_MODIFIERS
    paraphrases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the category of each concept it knows: what `forget --robust` composes a concept with
    concept_categories: Mapping[str, str] = field(default_factory=dict)

    def others_by_category(self, exclude: str) -> dict[str, list[str]]:
        """The world's concepts by category, without `exclude`."""
        out: dict[str, list[str]] = {}
        for name, category in self.concept_categories.items():
            if name != exclude:
                out.setdefault(category, []).append(name)
        return out


GENERIC_WORLD = World("generic")
