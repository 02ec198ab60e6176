"""A file of prompts, one a line (`--retain-file`): UTF-8 text, checked before any work."""

from __future__ import annotations

from pathlib import Path

from patchkit.core.prompt_text import first_control_character
from patchkit.errors import InputError
from patchkit.io.regular import read_capped

MAX_BYTES = 1 << 20  # a million bytes of prompts is far past any useful retain set


def read_prompt_file(path: Path) -> list[str]:
    """The non-blank lines of `path`, stripped. A link is followed, but to a regular file only."""
    data = read_capped(path, MAX_BYTES, hint="give a UTF-8 text file with one prompt a line, the prompts that matter")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})",
                         hint="save it as UTF-8, one prompt a line") from exc  # fmt: skip
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        prompt = line.strip()
        if not prompt:
            continue
        bad = first_control_character(prompt)
        if bad is not None:
            raise InputError(f"{path} line {number} holds the control character U+{ord(bad):04X}",
                             hint="prompts are plain text, one a line")  # fmt: skip
        prompts.append(prompt)
    if not prompts:
        raise InputError(f"{path} holds no prompt", hint="write one prompt a line, or leave --retain-file out")
    return prompts
