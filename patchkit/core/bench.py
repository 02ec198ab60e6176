"""ConceptBench files: validated against schemas/conceptbench.schema.json, then typed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from patchkit.errors import InputError


class BenchError(InputError):
    """A bench file that fails its schema; the message names the failing JSON path."""


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    path: str | None = None


@dataclass(frozen=True)
class BenchConcept:
    name: str
    category: str
    prompts: tuple[str, ...]
    images_per_prompt: int
    seed: int
    reference_images: str | None = None

    def jobs(self) -> list[tuple[str, int]]:
        """(prompt, seed) for every image: image i of prompt p uses seed + p * N + i."""
        n = self.images_per_prompt
        return [(prompt, self.seed + p * n + i) for p, prompt in enumerate(self.prompts) for i in range(n)]


@dataclass(frozen=True)
class Gate:
    max_target: float | None = None
    max_collateral: float | None = None


@dataclass(frozen=True)
class Bench:
    name: str
    steps: int
    guidance: float
    batch_size: int
    judges: dict[str, JudgeSpec]
    concepts: tuple[BenchConcept, ...]
    gate: Gate

    def names(self, category: str) -> list[str]:
        return [c.name for c in self.concepts if c.category == category]


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("patchkit").joinpath("schemas", f"{name}.schema.json").read_text()
    return json.loads(text)


def _json_path(error: jsonschema.ValidationError) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate(data: Any, schema_name: str, source: str) -> None:
    """Raise BenchError naming the first failing JSON path, e.g. `$.concepts[2].images_per_prompt`."""
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise BenchError(
            f"{source}: {_json_path(first)}: {first.message}",
            hint=f"fix the file so that it matches schemas/{schema_name}.schema.json",
        )


def parse_bench(data: Any, source: str = "bench") -> Bench:
    validate(data, "conceptbench", source)
    sampler = data["sampler"]
    concepts = tuple(
        BenchConcept(
            name=c["name"],
            category=c["category"],
            prompts=tuple(c["prompts"]),
            images_per_prompt=c["images_per_prompt"],
            seed=c["seed"],
            reference_images=c.get("reference_images"),
        )
        for c in data["concepts"]
    )
    names = [c.name for c in concepts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BenchError(f"{source}: concept {duplicates[0]!r} is listed twice", hint="give every concept one entry")
    missing = sorted({c.category for c in concepts} - set(data["judges"]))
    if missing:
        raise BenchError(
            f"{source}: category {missing[0]!r} has concepts but no judge",
            hint=f'add "judges": {{"{missing[0]}": {{"name": "classifier" or "clip", "path": ...}}}}',
        )
    gate = data.get("gate", {})
    return Bench(
        name=data["name"],
        steps=sampler["steps"],
        guidance=float(sampler["guidance"]),
        batch_size=sampler.get("batch_size", 16),
        judges={k: JudgeSpec(v["name"], v.get("path")) for k, v in data["judges"].items()},
        concepts=concepts,
        gate=Gate(gate.get("max_target"), gate.get("max_collateral")),
    )
