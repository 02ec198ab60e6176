"""--help that reads at 80 columns: prose paragraphs reflowed, examples kept and folded.

In rich markup mode typer keeps every line break of a docstring, so a docstring wrapped at
100 columns comes out as ragged half-lines in an 80-column terminal. Before the help is
drawn, each prose paragraph becomes one line for rich to wrap. A paragraph with an indented
line (an example or a table) keeps its breaks; its lines longer than 80 columns are folded
here, where the shape is known: a command at argument boundaries with shell continuations
(`\\`, so it still pastes), a table row under its own description column.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any

WIDTH = 78  # rich pads help by a column each side: 78 fits an 80-column terminal
# an indented line (an example), a list item, or click's no-rewrap mark (\b) keeps a paragraph as written
_KEEP = re.compile("^(\\s|[-*•] |\\d+[.)] |\x08)")
_WORD = re.compile(r"""(?:"[^"]*"|'[^']*'|\S)+""")  # a shell word: quotes keep their spaces
_ROW = re.compile(r"^(\s+\S+\s{2,})(\S.*)$")  # "  name   description"
_COMMANDS = ("patchkit", "accelerate", "python", "pip", "make")


def _units(words: list[str]) -> list[str]:
    """Shell words with each option kept beside its value: `-o out.safetensors` is never split."""
    out: list[str] = []
    for word in words:
        if out and out[-1].startswith("-") and " " not in out[-1] and not word.startswith("-"):
            out[-1] += " " + word
        else:
            out.append(word)
    return out


def fold(line: str, width: int = WIDTH) -> list[str]:
    """`line` as lines of at most `width` (one word longer than that stays whole)."""
    if len(line) <= width:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    if line.lstrip().startswith(_COMMANDS):
        words = _units(_WORD.findall(line))
        out, current = [], indent + words[0]
        for word in words[1:]:
            if len(current) + 1 + len(word) + 2 > width:  # room for the " \" that continues it
                out.append(current + " \\")
                current = indent + "    " + word
            else:
                current += " " + word
        return [*out, current]
    row = _ROW.match(line)
    head = row.group(1) if row else indent
    body = row.group(2) if row else line.strip()
    return textwrap.wrap(body, width, initial_indent=head, subsequent_indent=" " * len(head)) or [line]


def reflow(text: str) -> str:
    """`text` with the single line breaks inside its prose paragraphs joined, and long example lines folded."""
    out = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.split("\n")
        if "\f" in paragraph or any(_KEEP.match(line) for line in lines):
            out.append("\n".join(part for line in lines for part in fold(line)))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def reflow_tree(command: Any) -> None:
    """Reflow the help of `command` (a click command or group) and of every command under it."""
    if getattr(command, "help", None):
        command.help = reflow(command.help)
    for child in getattr(command, "commands", {}).values():
        reflow_tree(child)
