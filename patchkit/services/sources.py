"""Where patches come from: files, registry NAME@VERSION refs and *.stack.json stacks.

`apply` and the stack verbs both expand these into an ordered list of `PatchSource`s; they
share this module so that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.names import looks_like_ref
from patchkit.core.stack import MAX_STACK_BYTES, is_stack_name, parse_stack
from patchkit.errors import InputError
from patchkit.io.regular import not_a_file, read_capped
from patchkit.services.registry import blob_for, patch_path


@dataclass(frozen=True)
class PatchSource:
    """One patch to apply: a file, and the scale its delta is multiplied by."""

    path: Path
    scale: float = 1.0
    label: str | None = None  # how the user named it (a registry NAME@VERSION), else the file name
    pinned_id: str | None = None  # the patch id a stack pins for this entry: any other file is refused


@dataclass(frozen=True)
class Stack:
    """A parsed *.stack.json file: the base it pins and its ordered patches."""

    path: Path
    data: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def sources(self, scale: float = 1.0) -> list[PatchSource]:
        return [
            PatchSource(self.source_path(p["source"]), p["scale"] * scale, p["source"], p["patch_id"])
            for p in self.data["patches"]
        ]

    def source_path(self, source: str) -> Path:
        if looks_like_ref(source) and not (self.folder / source).exists():
            return blob_for(source)
        path = Path(source)
        return path if path.is_absolute() else self.folder / path


def read_stack(path: Path) -> Stack:
    hint = "make one: patchkit stack new BASE -o NAME.stack.json"
    reason = not_a_file(path)
    if reason is not None:
        raise InputError(f"stack {path} {reason}", hint=hint)
    return Stack(path, parse_stack(read_capped(path, MAX_STACK_BYTES, hint=hint), str(path)))


def sources_for(items: Sequence[Path], scale: float = 1.0) -> tuple[list[PatchSource], str | None]:
    """Patch files, registry NAME@VERSION refs and *.stack.json stacks, expanded in order.

    A lone stack applied at scale 1 also pins the output fingerprint apply must reproduce.
    """
    sources: list[PatchSource] = []
    expected = None
    for item in items:
        if is_stack_name(item.name):
            stack = read_stack(item)
            sources += stack.sources(scale)
            expected = stack.data["expected_output_fingerprint"] if len(items) == 1 and scale == 1.0 else None
        else:
            path = patch_path(str(item))
            sources.append(PatchSource(path, scale, None if path == item else str(item)))
    return sources, expected
