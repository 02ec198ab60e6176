"""Stack files (`*.stack.json`): parsing, validation and canonical text. Pure: no files are touched here."""

from __future__ import annotations

import json
from typing import Any

from patchkit.core import schemas
from patchkit.core.jsonread import parse_json
from patchkit.errors import InputError

STACK_SUFFIX = ".stack.json"
SCHEMA_VERSION = 1


class StackError(InputError):
    pass


def is_stack_name(name: str) -> bool:
    return name.endswith(STACK_SUFFIX)


MAX_STACK_BYTES = 16 << 20  # a stack of a thousand patches is a few hundred kB


def parse_stack(text: str | bytes, source: str) -> dict[str, Any]:
    data: dict[str, Any] = parse_json(text, source, hint="restore the file", error=StackError)
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StackError(
            f"{source}: stack schema_version {version} is newer than this patchkit understands ({SCHEMA_VERSION})",
            hint="upgrade patchkit",
        )
    schemas.validate(data, "stack", source, StackError)
    return data


def stack_text(stack: dict[str, Any]) -> str:
    """Sorted keys and a trailing newline, so that a stack diffs cleanly under review."""
    schemas.validate(stack, "stack", "the new stack", StackError)
    return json.dumps(stack, indent=2, sort_keys=True) + "\n"
