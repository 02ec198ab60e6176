"""Scales and merge weights: finite numbers in a documented range, checked wherever they enter."""

from __future__ import annotations

import math

from patchkit.errors import UsageError

MAX_SCALE = 100.0  # |scale|: a hundred times a patch's delta is already far past any sane use


def checked_scale(value: float, what: str) -> float:
    """`value` if it is a finite number with |value| <= MAX_SCALE; else a one-line refusal."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(
            f"{what} {value!r} is not a finite number", hint=f"use a number between -{MAX_SCALE:g} and {MAX_SCALE:g}"
        )
    if abs(value) > MAX_SCALE:
        raise UsageError(
            f"{what} {value:g} is outside -{MAX_SCALE:g}..{MAX_SCALE:g}", hint="scales near 1 are the norm"
        )
    return float(value)
