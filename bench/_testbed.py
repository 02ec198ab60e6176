"""Shared by the quality benches: a world's bench at a chosen size, its judges, and scoring.

Three ways to score, kept apart on purpose (never tune on what you measure):
- `WorldBench.report("testbed")` and `WorldBench.report("validation")`: the shipped
  ConceptBenches of world A and world B, which the README's quality tables report;
- `WorldBench.tuning()` and `WorldBench.transfer()`: world A's tuning split
  (patchkit/testbed/tuning.py), its concepts in the phrasings a forget trains with and in
  phrasings nothing trains, benches or attacks with, on seeds from 500,000 up, which no
  bench uses. Defaults are chosen on this split only (bench/tradeoff.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from patchkit.core.conceptbench import Bench, parse_bench
from patchkit.evaluation.judges import load_judge
from patchkit.services.score import _score_all
from patchkit.services.worlds import judge_folders
from patchkit.testbed import world_b
from patchkit.testbed.paths import TESTBED_BENCH, VALIDATION_BENCH, VALIDATION_MODEL
from patchkit.testbed.testbed_world import testbed_world
from patchkit.testbed.tuning import TRAINED_SEED, TRANSFER_SEED, split_seeds, transfer_prompts
from patchkit.training.settings import ForgetSettings

BENCHES = {"testbed": TESTBED_BENCH, "validation": VALIDATION_BENCH}
MODELS = {"testbed": "testbed", "validation": str(VALIDATION_MODEL)}


def user_templates(world: str, category: str) -> list[str] | None:
    """The --prompt templates a user of world B would type: its own phrasing, never its bench's.

    None for the testbed, whose world patchkit knows (its templates already leave the bench out).
    """
    if world == "testbed":
        return None
    scored = set(world_b.BENCH_TEMPLATES[category])
    return [t.replace("{color}", "cyan") for t in world_b.TRAINING_TEMPLATES[category] if t not in scored]


def settings_from(assignments: Sequence[str], base: ForgetSettings | None = None) -> ForgetSettings:
    """`base` (the defaults) with --set FIELD=VALUE assignments; values are JSON: 3, 1e-2, true."""
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in assignments)}
    return dataclasses.replace(base or ForgetSettings(), **overrides)


class WorldBench:
    """Every concept of a bench at `images` per prompt, judged by the bench's classifiers."""

    def __init__(self, data: dict[str, Any], folder: Path, label: str) -> None:
        self.bench: Bench = parse_bench(data, label)
        self.judges = {
            c: load_judge(s, c, self.bench.names(c), base_dir=folder, named=judge_folders())
            for c, s in self.bench.judges.items()
        }
        self.categories = {c.name: c.category for c in self.bench.concepts}

    @classmethod
    def report(cls, world: str, images: int) -> WorldBench:
        path = BENCHES[world]
        data = json.loads(path.read_text())
        data["concepts"] = [dict(c, images_per_prompt=images) for c in data["concepts"]]
        return cls(data, path.parent, f"{world} ({images} images per prompt)")

    @classmethod
    def tuning(cls, images: int) -> WorldBench:
        """The trained phrasings of world A's tuning split: collateral where the forget trained."""
        prompts = testbed_world().concept_prompts
        return cls._split(images, lambda c: list(prompts[c["name"]]), TRAINED_SEED, "trained phrasings")

    @classmethod
    def transfer(cls, images: int) -> WorldBench:
        """The transfer phrasings of world A's tuning split: forgetting in words no forget saw."""
        return cls._split(images, lambda c: transfer_prompts(c["name"], c["category"]), TRANSFER_SEED, "transfer")

    @classmethod
    def _split(cls, images: int, prompts_of: Callable[[dict[str, Any]], list[str]], first_seed: int,
               label: str) -> WorldBench:  # fmt: skip
        data = json.loads(TESTBED_BENCH.read_text())
        bench_prompts = {p for c in data["concepts"] for p in c["prompts"]}
        concepts = []
        for index, concept in enumerate(data["concepts"]):
            mine = prompts_of(concept)
            assert not set(mine) & bench_prompts, "the tuning split must never hold a bench prompt"
            seeds = split_seeds(first_seed, index, images * len(mine))
            concepts.append(dict(concept, prompts=mine, images_per_prompt=images, seed=seeds.start))
        data["concepts"] = concepts
        return cls(data, TESTBED_BENCH.parent, f"testbed tuning split, {label} ({images} images per prompt)")

    def scores(self, pipe: Any, label: str) -> dict[str, float]:
        """Each concept's M-Score with `pipe` as it is (patched or not)."""
        scored, _ = _score_all(pipe, self.bench, self.judges, label, None)
        return {name: result.score for name, result in scored.items()}


TestbedBench = WorldBench  # the name the older benches import
