"""A synthetic world's ConceptBench, derived from the world so that the two never drift apart."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from patchkit.testbed import world
from patchkit.testbed.synthetic import SyntheticWorld

IMAGES_PER_CONCEPT = 32
REFERENCES_PER_CONCEPT = 8


def reference_folder(name: str) -> str:
    return f"references/{name.replace(' ', '_')}"


def reference_images(name: str, category: str, w: SyntheticWorld = world) -> list[Image.Image]:
    """Ground-truth renders of `name`, the reference images of the capacity probe."""
    rng = random.Random(f"references-{name}")
    scenes = [w.reference_scene(name, category, i) for i in range(REFERENCES_PER_CONCEPT)]
    return [w.render(scene, rng) for scene in scenes]


def _concepts(w: SyntheticWorld) -> list[dict[str, Any]]:
    concepts = []
    for index, (name, category) in enumerate(w.all_concepts()):
        prompts = w.bench_prompts(name, category)
        concepts.append(
            {
                "name": name,
                "category": category,
                "prompts": prompts,
                "images_per_prompt": IMAGES_PER_CONCEPT // len(prompts),
                "seed": 1000 * index,
                "reference_images": reference_folder(name),
            }
        )
    return concepts


def build_testbed_bench() -> dict[str, Any]:
    return {
        "bench_version": 1,
        "name": "testbed",
        "description": "Every concept of the patchkit testbed world, judged by the testbed's classifiers.",
        "mscore": "mscore/1",
        "sampler": {"steps": 25, "guidance": 5.0, "batch_size": 32},
        "judges": {category: {"name": "classifier", "path": "testbed"} for category in world.CATEGORIES},
        "concepts": _concepts(world),
    }


def build_validation_bench(w: SyntheticWorld) -> dict[str, Any]:
    """World B's bench, as a user would ship one: its judges in a folder beside it."""
    return {
        "bench_version": 1,
        "name": w.NAME,
        "description": "World B, the validation world: robots, shapes and palettes that no default was chosen on.",
        "mscore": "mscore/1",
        "sampler": {"steps": 25, "guidance": 5.0, "batch_size": 32},
        "judges": {category: {"name": "classifier", "path": "judges"} for category in w.CATEGORIES},
        "concepts": _concepts(w),
    }
