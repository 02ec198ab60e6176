"""ConceptBench files: validated against schemas/conceptbench.schema.json, then typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patchkit.core import schemas
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


def validate(data: Any, schema_name: str, source: str) -> None:
    schemas.validate(data, schema_name, source, BenchError)


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
