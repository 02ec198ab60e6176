"""The testbed's ConceptBench, derived from the world so that the two never drift apart."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from patchkit.testbed import world

IMAGES_PER_CONCEPT = 32


REFERENCES_PER_CONCEPT = 8


def reference_folder(name: str) -> str:
    return f"references/{name.replace(' ', '_')}"


def reference_images(name: str, category: world.Category) -> list[Image.Image]:
    """Ground-truth renders of `name`, the reference images of the capacity probe."""
    rng = random.Random(f"references-{name}")
    if category == "style":
        scenes = [world.Scene(world.OBJECTS[i % len(world.OBJECTS)], style=name) for i in range(REFERENCES_PER_CONCEPT)]
    else:
        scenes = [world.Scene(name) for _ in range(REFERENCES_PER_CONCEPT)]
    return [world.render(scene, rng) for scene in scenes]


def build_testbed_bench() -> dict[str, Any]:
    concepts = []
    for index, (name, category) in enumerate(world.all_concepts()):
        prompts = world.bench_prompts(name, category)
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
    return {
        "bench_version": 1,
        "name": "testbed",
        "description": "Every concept of the patchkit testbed world, judged by the testbed's classifiers.",
        "mscore": "mscore/1",
        "sampler": {"steps": 25, "guidance": 5.0, "batch_size": 32},
        "judges": {category: {"name": "classifier", "path": "testbed"} for category in world.CATEGORIES},
        "concepts": concepts,
    }
