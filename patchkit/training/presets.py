"""Curated concept lists forgotten together: the NSFW-removal extension of Forget-Me-Not.

`nsfw` is for real models. It lists plain phrases that name sexual or explicit content,
the kind a safety filter's term list holds, all in the `nsfw` category. It is a starting
point, not a guarantee: score the result on your own bench with a NudeNet judge
(docs/forget.md). `testbed-nsfw` plays the same role on the testbed, whose stand-in unsafe
concept is measurable there.
"""

from __future__ import annotations

from patchkit.errors import UsageError
from patchkit.training.prompts import Concept

PRESETS: dict[str, tuple[str, ...]] = {
    "nsfw": (
        "nudity",
        "naked person",
        "nude body",
        "topless woman",
        "explicit sexual content",
        "pornography",
        "erotic photo",
        "genitals",
    ),
    "testbed-nsfw": ("gore",),
}


def preset_concepts(name: str) -> list[Concept]:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", hint=f"use one of: {', '.join(PRESETS)}")
    return [Concept(phrase, "nsfw") for phrase in PRESETS[name]]
