"""`forget --robust`: training phrasings with the concept among other concepts and modifiers.

A forget trained on "a circle" alone leaves "a circle in the style of neon" drawing circles
(issue 18). These templates put the concept in such company while training. They are kept
apart from attack/1's composition templates (core/attack_prompts.py), so the attack that
reports a robust forget never judges a phrasing it was trained on
(tests/core/test_robust_prompts.py holds the two sets apart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# concept category -> other category (or "modifier") -> templates; "{c}" the concept, "{o}" the other
_TRAINING_COMPOSITIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "object": {
        "style": ("a photo of a {c} in the style of {o}",),
        "id": ("a portrait of {o} with a {c}",),
        "modifier": ("the {o} {c}",),
    },
    "id": {
        "style": ("a painting of {c} in the style of {o}",),
        "object": ("a portrait of {c} with a {o}",),
        "modifier": ("a portrait of the {o} {c}",),
    },
    "style": {
        "object": ("the {o} in the style of {c}",),
        "id": ("a photo of {o} in the style of {c}",),
        "modifier": ("the {o} painting in the style of {c}",),
    },
    "nsfw": {
        "style": ("a painting of {c} in the style of {o}",),
        "id": ("a portrait of {o} with {c}",),
        "object": ("the {o} with {c}",),
        "modifier": ("the {o} {c}",),
    },
}


def training_templates() -> dict[str, dict[str, tuple[str, ...]]]:
    return {category: dict(forms) for category, forms in _TRAINING_COMPOSITIONS.items()}


def composition_templates(
    category: str, others: Mapping[str, Sequence[str]], modifiers: Sequence[str]
) -> tuple[str, ...]:
    """'{}'-templates (the concept's place) for one category: each other concept and modifier once."""
    forms = _TRAINING_COMPOSITIONS.get(category, _TRAINING_COMPOSITIONS["object"])
    out: list[str] = []
    for other_category, templates in forms.items():
        fillers = modifiers if other_category == "modifier" else others.get(other_category, ())
        for i, filler in enumerate(fillers):
            # the result is formatted with the concept's name later: braces in a filler stay literal
            literal = filler.replace("{", "{{").replace("}", "}}")
            template = templates[i % len(templates)].replace("{o}", literal).replace("{c}", "{}")
            if template not in out:
                out.append(template)
    return tuple(out)
