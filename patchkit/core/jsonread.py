"""Parsing JSON that patchkit did not necessarily write: one error line for every way it can be bad.

A header, manifest, stack, index, signature bundle or cache entry may be damaged or hostile:
not UTF-8, not JSON, nested deep enough to exhaust the parser's recursion, or of the wrong
shape. Each becomes the caller's own PatchkitError with its hint, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from patchkit.errors import InputError, PatchkitError


def parse_json(
    text: str | bytes, source: str, *, hint: str, error: type[PatchkitError] = InputError, shape: type = dict
) -> Any:
    """`text` as JSON of the given shape (dict or list), or `error(...)` naming `source` and what is wrong."""
    try:
        data = json.loads(text, parse_constant=_not_json)
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text", hint=hint) from exc
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at char {exc.pos})", hint=hint) from exc
    except RecursionError as exc:  # the C parser's guard against [[[[...]]]]
        raise error(f"{source}: JSON nested too deeply to read", hint=hint) from exc
    except ValueError as exc:  # NaN or Infinity, from _not_json
        raise error(f"{source}: {exc}", hint=hint) from exc
    if not isinstance(data, shape):
        raise error(f"{source}: not a JSON {'object' if shape is dict else 'array'}", hint=hint)
    return data


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity; JSON has neither, and a scale of NaN fuses NaN weights
    raise ValueError(f"{constant} is not a JSON number")
