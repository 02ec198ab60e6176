"""Use cases for the bundled testbed: build it, and check it meets its quality bars."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.backend import pipeline
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.core.progress import Progress
from patchkit.errors import UsageError
from patchkit.io.atomic import atomic_path, check_output_path
from patchkit.models import refs
from patchkit.models.refs import TESTBED_REFERENCE
from patchkit.testbed import world
from patchkit.testbed.judging import JudgePanel
from patchkit.testbed.paths import TESTBED_JUDGES, VALIDATION_JUDGES, VALIDATION_MODEL
from patchkit.testbed.synthetic import SyntheticWorld

JUDGE_BAR = 0.98
GENERATION_BAR = 0.80
DEFAULT_SAMPLER = SamplerSettings(steps=25, guidance=5.0, batch_size=32)


@dataclass(frozen=True)
class ShippedWorld:
    """A synthetic world patchkit ships: its definition, its model and its judges."""

    world: SyntheticWorld
    model: str
    judges: Path


def _shipped() -> dict[str, ShippedWorld]:
    from patchkit.testbed import world_b

    return {
        world.NAME: ShippedWorld(world, TESTBED_REFERENCE, TESTBED_JUDGES),
        world_b.NAME: ShippedWorld(world_b, str(VALIDATION_MODEL), VALIDATION_JUDGES),
    }


def shipped_world(world_name: str) -> ShippedWorld:
    worlds = _shipped()
    if world_name not in worlds:
        raise UsageError(f"unknown world {world_name!r}", hint=f"choose one of: {', '.join(worlds)}")
    return worlds[world_name]


def synthetic_world(world_name: str) -> SyntheticWorld:
    return shipped_world(world_name).world


def build(
    out: Path, *, seed: int, quick: bool, force: bool, progress: Progress, world_name: str = world.NAME
) -> dict[str, object]:
    """Train a world's model from scratch into `out` (a new folder, written atomically).

    `testbed` is world A, the shipped testbed; `validation` is world B, which no default
    is chosen on (fewer concepts, so shorter training; see docs/testbed.md).
    """
    from patchkit.testbed.build import BuildSettings, build_testbed

    chosen = synthetic_world(world_name)
    check_output_path(out, force=force)
    settings = BuildSettings(seed=seed, world_name=world_name)
    if world_name == "validation":
        settings = BuildSettings(seed=seed, world_name=world_name, judge_steps=1500, unet_steps=3500)
    if quick:  # a smoke build for tests: every stage runs, nothing is learnt well
        settings = BuildSettings(seed=seed, world_name=world_name, dataset_size=256, judge_steps=5, vae_steps=3,
                                 unet_steps=3, unet_batch=8)  # fmt: skip
    with atomic_path(out) as tmp:
        tmp.mkdir()
        report = build_testbed(tmp, settings, progress, chosen)
    return report.to_json()


@dataclass(frozen=True)
class ConceptRate:
    concept: str
    category: str
    rate: float
    images: int


@dataclass(frozen=True)
class QualityCheck:
    judge_accuracy: dict[str, float]
    generation: list[ConceptRate]
    sampler: SamplerSettings

    @property
    def passed(self) -> bool:
        return all(a >= JUDGE_BAR for a in self.judge_accuracy.values()) and all(
            r.rate >= GENERATION_BAR for r in self.generation
        )

    def failures(self) -> list[str]:
        bad = [f"judge {c} {a:.3f} < {JUDGE_BAR}" for c, a in self.judge_accuracy.items() if a < JUDGE_BAR]
        bad += [f"{r.concept} {r.rate:.3f} < {GENERATION_BAR}" for r in self.generation if r.rate < GENERATION_BAR]
        return bad

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "judge_accuracy": self.judge_accuracy,
                "generation": [r.__dict__ for r in self.generation], "failures": self.failures()}  # fmt: skip


def judge_accuracy(judges: JudgePanel, per_category: int, seed: int, w: SyntheticWorld = world) -> dict[str, float]:
    """Accuracy of each judge on freshly rendered ground-truth images it never saw."""
    rng = random.Random(f"check-{seed}")
    scores: dict[str, float] = {}
    for category in w.CATEGORIES:
        scenes = [w.judge_scene(category, rng) for _ in range(per_category)]
        images = [w.render(s, rng) for s in scenes]
        verdicts = judges.classify(category, images)
        truth = [s.label(category) or "none" for s in scenes]
        scores[category] = sum(v == t for v, t in zip(verdicts, truth, strict=True)) / per_category
    return scores


def check(
    model: str | None = None,
    *,
    images_per_concept: int = 32,
    judges_folder: Path | None = None,
    sampler: SamplerSettings = DEFAULT_SAMPLER,
    seed: int = 0,
    progress: Progress | None = None,
    world_name: str = world.NAME,
) -> QualityCheck:
    """Measure a world's quality bars: judge accuracy and per-concept generation rate.

    `model` and `judges_folder` default to the shipped ones of `world_name`.
    """
    if images_per_concept < 1:
        raise UsageError("-n must be at least 1", hint="the README's bars use 32 images per concept")
    shipped = shipped_world(world_name)
    w = shipped.world
    model = model or shipped.model
    judges = JudgePanel.load(judges_folder or shipped.judges, w.CATEGORIES)
    accuracy = judge_accuracy(judges, 1000, seed, w)
    pipe = pipeline.load_pipeline(refs.resolve(model))
    rates = []
    concepts = w.all_concepts()
    for index, (name, category) in enumerate(concepts):
        prompts = w.bench_prompts(name, category)
        asked = [prompts[i % len(prompts)] for i in range(images_per_concept)]
        seeds = [seed + i for i in range(images_per_concept)]
        images = generate(pipe, asked, seeds, sampler)
        verdicts = judges.classify(category, images)
        rates.append(ConceptRate(name, category, sum(v == name for v in verdicts) / len(verdicts), len(verdicts)))
        if progress:
            progress("generating", index + 1, len(concepts), {})
    return QualityCheck(accuracy, rates, sampler)
