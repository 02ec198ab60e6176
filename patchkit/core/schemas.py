"""JSON Schemas shipped in schemas/: loading them, and one-line errors that name the failing JSON path."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from patchkit.errors import InputError


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("patchkit").joinpath("schemas", f"{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def json_path(error: jsonschema.ValidationError) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate(data: Any, schema_name: str, source: str, error: type[InputError] = InputError) -> None:
    """Raise `error` naming the first failing JSON path, e.g. `$.concepts[2].images_per_prompt`."""
    validator = jsonschema.Draft202012Validator(schema(schema_name), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise error(
            f"{source}: {json_path(first)}: {first.message}",
            hint=f"fix it so that it matches schemas/{schema_name}.schema.json",
        )
