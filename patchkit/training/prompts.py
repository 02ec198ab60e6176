"""What a forget or correct run trains on: prompts naming each concept, and the anchor for each.

The anchor is what the prompt should mean after the patch:
- forget: the prompt with the concept taken out ("a photo of a circle" -> "a photo of a");
- correct A -> B: the prompt with A replaced by B.

A concept with a context (disentanglement) trains only on prompts that name both, so the
model unlearns what A does next to the context and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from patchkit.core.world import CATEGORIES, World
from patchkit.errors import UsageError


@dataclass(frozen=True)
class Concept:
    name: str
    category: str
    target: str | None = None  # set for a correction: prompts naming `name` should give `target`
    context: str | None = None  # set for a disentanglement: only prompts that also name `context` train

    @property
    def action(self) -> str:
        return "forget" if self.target is None else "correct"


@dataclass(frozen=True)
class TrainingPrompt:
    concept: int  # index into the run's concepts
    prompt: str
    anchor: str
    phrase: str | None = None  # the words whose attention is re-steered, when not the concept's name (--ti)
    # added by patchkit beyond the phrasings asked for (--every-template): a model whose context
    # cuts it off drops it without a warning, since nobody chose it
    quiet: bool = False


def pair_concepts(names: Sequence[str], categories: Sequence[str]) -> list[Concept]:
    """One category for every concept, or one per concept, in order."""
    if len(categories) not in (1, len(names)):
        raise UsageError(
            "give one --category for all concepts, or one per --concept", hint="--concept alice --category id"
        )
    paired = list(categories) * len(names) if len(categories) == 1 else list(categories)
    return [Concept(n, c) for n, c in zip(names, paired, strict=True)]


def check_categories(concepts: Sequence[Concept]) -> None:
    for concept in concepts:
        if concept.category not in CATEGORIES:
            raise UsageError(f"unknown category {concept.category!r}", hint=f"use one of: {', '.join(CATEGORIES)}")


def without(prompt: str, name: str) -> str:
    return " ".join(prompt.replace(name, " ").split())


def mentions(prompt: str, words: str) -> bool:
    """True when `words` occur in `prompt` as whole words ("ring" is not in "a string")."""
    return re.search(rf"(?<!\w){re.escape(words)}(?!\w)", prompt) is not None


def _in_context(templates: Sequence[str], context: str) -> list[str]:
    """The templates that already name the context, else every template prefixed with it."""
    naming = [t for t in templates if mentions(t, context)]
    return naming or [f"{context}, {t}" for t in templates]


def check_template(template: str) -> str:
    """A --prompt template: one "{}" where the concept goes, and no other braces."""
    if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise UsageError(
            f"--prompt {template!r} must mark the concept with exactly one {{}} and hold no other braces",
            hint='--prompt "a photo of {}" --prompt "{} on a table"',
        )
    if not template.replace("{}", "").strip() and template.strip() != "{}":
        raise UsageError(f"--prompt {template!r} is blank around its {{}}", hint='--prompt "a photo of {}"')
    return template


def training_prompts(
    concepts: Sequence[Concept],
    templates: Mapping[str, Sequence[str]],
    given: Sequence[str] | None = None,
    context_templates: Mapping[str, Sequence[str]] | None = None,
) -> list[TrainingPrompt]:
    """Each concept in each template of its category, or in the user's own `given` templates.

    A disentanglement trains on the `context_templates` that name its context, when the
    world has them and the user gave no templates."""
    check_categories(concepts)
    out = []
    for index, concept in enumerate(concepts):
        chosen = [check_template(t) for t in given] if given else templates[concept.category]
        if concept.context is not None:
            wider = context_templates[concept.category] if context_templates and not given else chosen
            naming = [t for t in wider if mentions(t, concept.context)]
            chosen = naming or _in_context(chosen, concept.context)
        for template in chosen:
            prompt = template.format(concept.name)
            anchor = without(prompt, concept.name) if concept.target is None else template.format(concept.target)
            out.append(TrainingPrompt(index, prompt, anchor))
    return out


def with_placeholders(items: Sequence[TrainingPrompt], concepts: Sequence[Concept],
                      placeholders: Mapping[int, str]) -> list[TrainingPrompt]:  # fmt: skip
    """`items`, plus each again with its concept's name replaced by the learnt placeholder token (--ti)."""
    extra = []
    for item in items:
        placeholder = placeholders.get(item.concept)
        if placeholder is not None:
            prompt = item.prompt.replace(concepts[item.concept].name, placeholder)
            extra.append(TrainingPrompt(item.concept, prompt, item.anchor, phrase=placeholder))
    return [*items, *extra]


def world_retain_prompts(world: World, concepts: Sequence[Concept]) -> list[str]:
    """The prompts of every other concept the world knows, which hold the neighbours in place.

    A disentanglement's own pairs (the concept next to its context) are left out: that is
    what it trains on. The generic world knows no concepts, so this is empty there.
    """
    names = {c.name for c in concepts if c.context is None} | {c.target for c in concepts if c.target}
    pairs = [(c.name, c.context) for c in concepts if c.context is not None]
    return [
        p
        for name, prompts in world.concept_prompts.items()
        if name not in names
        for p in prompts
        if not any(mentions(p, a) and mentions(p, b) for a, b in pairs)
    ]


def is_about(prompt: str, concepts: Sequence[Concept]) -> bool:
    """True when `prompt` names a concept being forgotten, or a disentanglement's pair: such a
    prompt must not be held in place (for a correction the target is held, and may be named)."""
    forgotten = [c.name for c in concepts]
    pairs = [(c.name, c.context) for c in concepts if c.context is not None]
    if any(mentions(prompt, name) for name in forgotten if not any(name == a for a, _ in pairs)):
        return True
    return any(mentions(prompt, a) and mentions(prompt, b) for a, b in pairs)
