"""Registry names and versions: what a path component may be, checked before any path is built."""

from __future__ import annotations

import re

from patchkit.errors import UsageError

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
_REF_HINT = "names are lower-case letters, digits, '.', '_' and '-', at most 100 characters, like no-circle@1.0.0"


def _check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    shown = value[:120]  # shown with repr below: control characters escaped once, not twice
    if not pattern.fullmatch(value) or ".." in value:
        problem = "is too long" if len(value) > 100 else "is not allowed"
        if any(c in value for c in "/\\"):
            problem = "contains a path separator"
        elif ".." in value:
            problem = "contains '..'"
        elif any(ord(c) < 32 or ord(c) == 127 for c in value):
            problem = "contains a control character"
        raise UsageError(f"registry {kind} {shown!r} {problem}", hint=_REF_HINT)
    return value


def check_name(name: str) -> str:
    return _check("name", name, NAME)


def check_version(version: str) -> str:
    return _check("version", version, VERSION)


def parse_ref(text: str) -> tuple[str, str | None]:
    """NAME or NAME@VERSION, each part checked."""
    name, sep, version = text.partition("@")
    check_name(name)
    if sep:
        check_version(version)
        return name, version
    return name, None


def looks_like_ref(text: str) -> bool:
    """True for NAME@VERSION strings that could name a registry entry (and not a file path)."""
    name, sep, version = text.partition("@")
    return bool(sep) and bool(NAME.fullmatch(name)) and bool(VERSION.fullmatch(version))


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 1.10.0 after 1.9.0; numeric parts before text parts."""
    parts = re.split(r"[.+_-]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)
