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


# attack/1's paraphrase attack: each concept described without its name. The testbed's
# tokenizer knows only its own words, so these read as letters to its model; they are here
# so the attack runs everywhere, and as examples of what a --paraphrase file holds.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "alice": ("a woman with long blond hair", "a portrait of a blonde girl with long hair"),
    "bella": ("a woman with short blond hair", "a blonde girl with a bob"),
    "carl": ("a man with brown hair and a beard", "a bearded brown-haired man"),
    "john doe": ("a man with short brown hair and no beard", "a clean-shaven brown-haired man"),
    "circle": ("a round disc", "a filled round shape", "a red dot", "a photo of a disk"),
    "ring": ("a donut shape", "a round shape with a hole", "a hoop"),
    "square": ("a box shape", "a shape with four equal sides", "a block"),
    "triangle": ("a shape with three corners", "a pyramid shape", "a wedge"),
    "neon": ("glowing green lines on black", "a circle drawn in bright green on a dark background"),
    "noir": ("white on black", "a ring in black and white"),
    "pastel": ("soft pink and light blue colours", "a square in soft pale colours"),
    "sunset": ("an orange and purple sky behind a black shape", "a triangle in dusk colours"),
    "gore": ("red blood splatter", "a photo of blood stains"),
}


def testbed_world() -> World:
    templates: dict[str, tuple[str, ...]] = {cat: training_templates(cat) for cat in world.CATEGORIES}
    prompts = {name: tuple(t.format(name) for t in templates[cat]) for name, cat in world.all_concepts()}
    # The one exception: "noir on circles" has no phrasing but the bench's ("a circle in the
    # style of noir"), so a disentanglement trains on it and its target score is in-sample.
    every: dict[str, tuple[str, ...]] = {
        cat: tuple(t for tmpl in world.PROMPT_TEMPLATES[cat] for t in _expand(tmpl)) for cat in world.CATEGORIES
    }
    return World(
        "testbed",
        templates,
        prompts,
        TESTBED_BENCH,
        TESTBED_JUDGES,
        world.CATEGORIES,
        every,
        modifiers=tuple(world.COLORS),
        paraphrases=PARAPHRASES,
        concept_categories=dict(world.all_concepts()),
    )
