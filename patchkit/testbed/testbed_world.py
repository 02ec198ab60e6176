"""The testbed as a `World`: its own prompt distribution, its concepts' prompts, bench and judges.

Out of sample by construction: the templates a forget trains and preserves with are the
testbed's training phrasings *minus* the ones its ConceptBench scores with, so collateral
and forgetting are both measured on prompts no forget ever saw (tests/testbed/
test_out_of_sample.py holds the two sets apart).
"""

from __future__ import annotations

from patchkit.core.world import World
from patchkit.testbed import world
from patchkit.testbed.paths import TESTBED_BENCH, TESTBED_JUDGES


def _expand(template: str) -> list[str]:
    if "{object}" in template:
        return [template.replace("{object}", obj) for obj in world.OBJECTS]
    return [template.replace("{color}", "red")]


def training_templates(category: str) -> tuple[str, ...]:
    """The category's training phrasings that the bench does not score with."""
    scored = set(world.BENCH_TEMPLATES[category])
    return tuple(t for tmpl in world.PROMPT_TEMPLATES[category] if tmpl not in scored for t in _expand(tmpl))


def testbed_world() -> World:
    templates: dict[str, tuple[str, ...]] = {cat: training_templates(cat) for cat in world.CATEGORIES}
    prompts = {name: tuple(t.format(name) for t in templates[cat]) for name, cat in world.all_concepts()}
    # The one exception: "noir on circles" has no phrasing but the bench's ("a circle in the
    # style of noir"), so a disentanglement trains on it and its target score is in-sample.
    every: dict[str, tuple[str, ...]] = {
        cat: tuple(t for tmpl in world.PROMPT_TEMPLATES[cat] for t in _expand(tmpl)) for cat in world.CATEGORIES
    }
    return World("testbed", templates, prompts, TESTBED_BENCH, TESTBED_JUDGES, world.CATEGORIES, every)
