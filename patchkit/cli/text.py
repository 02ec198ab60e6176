"""Untrusted text made safe to print: no markup, no control characters, one bounded line.

Names, paths and messages can come from hostile files. Rich would read `[/]` in them as
markup (and crash, or restyle what the file says); control characters and bidi overrides
could move the cursor, set the window title or forge an `error:` row.
"""

from __future__ import annotations

import re

from rich.markup import escape

MAX_LINE = 600  # characters of one shown line; a 10 MB name is elided, not printed

# C0 and C1 controls (newline and tab included: one line), DEL, and the bidi embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """`text` as one printable line of rich text: unsafe characters shown as \\uXXXX, elided past `limit`."""
    visible = _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if len(visible) > limit:
        cut = len(visible) - limit
        visible = f"{visible[: limit // 2]}…[{cut:,} characters elided]…{visible[-limit // 2 :]}"
    return escape(visible)
