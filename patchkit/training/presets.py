"""Curated concept lists forgotten together: the NSFW-removal extension of Forget-Me-Not.

`nsfw` is for real models. It lists plain phrases that name sexual or explicit content,
the kind a safety filter's term list holds, all in the `nsfw` category. It is a starting
point, not a guarantee: score the result on your own bench with a NudeNet judge
(docs/forget.md). `testbed-nsfw` plays the same role on the testbed, whose stand-in unsafe
concept is measurable there.

Both presets train with the textual-inversion stage and 90 steps unless the command line
says otherwise: on the testbed, gore stayed at 0.25 with the plain defaults and fell to
0.09 this way, inside the collateral bars (docs/forget.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from patchkit.errors import UsageError
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

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
_HARDER: dict[str, Any] = {"textual_inversion": True, "steps": 90}
PRESET_SETTINGS: dict[str, dict[str, Any]] = {"nsfw": _HARDER, "testbed-nsfw": _HARDER}


def preset_concepts(name: str) -> list[Concept]:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}", hint=f"use one of: {', '.join(PRESETS)}")
    return [Concept(phrase, "nsfw") for phrase in PRESETS[name]]


def preset_settings(name: str, settings: ForgetSettings, given: set[str]) -> ForgetSettings:
    """`settings` with the preset's own defaults, except for the fields in `given` (set by the user)."""
    return replace(settings, **{k: v for k, v in PRESET_SETTINGS.get(name, {}).items() if k not in given})
