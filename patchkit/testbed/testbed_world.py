"""The testbed as a `World`: its own prompt distribution, its concepts' prompts, bench and judges."""

from __future__ import annotations

from patchkit.core.world import World
from patchkit.testbed import world
from patchkit.testbed.paths import TESTBED_BENCH, TESTBED_JUDGES


def _expand(template: str) -> list[str]:
    if "{object}" in template:
        return [template.replace("{object}", obj) for obj in world.OBJECTS]
    return [template.replace("{color}", "red")]


def testbed_world() -> World:
    templates: dict[str, tuple[str, ...]] = {
        cat: tuple(t for tmpl in world.PROMPT_TEMPLATES[cat] for t in _expand(tmpl)) for cat in world.CATEGORIES
    }
    prompts = {name: tuple(world.bench_prompts(name, cat)) for name, cat in world.all_concepts()}
    return World("testbed", templates, prompts, TESTBED_BENCH, TESTBED_JUDGES, world.CATEGORIES)
