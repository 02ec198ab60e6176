"""A prompt is plain text: no control, format or surrogate characters.

An escape sequence or a bidi override in a prompt would reach the manifest, the terminal
and every tool that prints the manifest; a prompt never needs one.
"""

from __future__ import annotations

import unicodedata

_FORBIDDEN = ("Cc", "Cf", "Cs")


def first_control_character(text: str) -> str | None:
    """The first character of `text` that a prompt must not hold, or None."""
    return next((ch for ch in text if unicodedata.category(ch) in _FORBIDDEN), None)
