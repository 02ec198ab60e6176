"""Never tune on what you measure: what a testbed forget trains and preserves on is disjoint
from what the testbed's ConceptBench scores with, in prompts and in seeds.

The README's quality table is measured on the bench; the defaults were chosen by
bench/tradeoff.py on a tuning split (other prompts, other seeds) and never on the bench
or on the validation world.
"""

from __future__ import annotations

import json

import pytest

from patchkit.backend import pipeline
from patchkit.models import refs
from patchkit.services.preservation import retain_set
from patchkit.services.worlds import world_for
from patchkit.testbed import world as world_a
from patchkit.testbed.paths import TESTBED_BENCH
from patchkit.training.prompts import Concept, training_prompts
from patchkit.training.settings import training_image_seeds, training_noise_seed


def _bench() -> dict:
    return json.loads(TESTBED_BENCH.read_text())


def _bench_prompts() -> set[str]:
    return {p for c in _bench()["concepts"] for p in c["prompts"]}


def _bench_seeds() -> set[int]:
    seeds = set()
    for c in _bench()["concepts"]:
        seeds.update(range(c["seed"], c["seed"] + c["images_per_prompt"] * len(c["prompts"])))
    return seeds


@pytest.fixture(scope="module")
def testbed_pipe():
    return pipeline.load_pipeline(refs.resolve("testbed"))


@pytest.mark.parametrize(("name", "category"), world_a.all_concepts())
def test_training_and_retain_prompts_never_meet_the_bench(testbed_pipe, name, category):
    ref = refs.resolve("testbed")
    world = world_for(ref)
    concept = Concept(name, category)
    items = training_prompts([concept], world.templates)
    templates = {0: list(world.templates[category])}
    retain = retain_set(world, [concept], templates, (), defaults=True, pipe=testbed_pipe)
    bench = _bench_prompts()
    assert items and retain.prompts
    assert not {it.prompt for it in items} & bench
    assert not set(retain.prompts) & bench
    assert set(retain.sources) == {"world", "neighbours", "generic"}


@pytest.mark.parametrize("seed", [0, 1, 7, 12_345])
def test_training_seeds_never_meet_bench_seeds(seed):
    bench = _bench_seeds()
    assert len(bench) == sum(c["images_per_prompt"] * len(c["prompts"]) for c in _bench()["concepts"])
    drawn = set(training_image_seeds(seed, 13 * 64)) | {training_noise_seed(seed)}
    assert not drawn & bench


def test_the_bench_prompts_are_the_ones_the_bench_file_holds():
    # the split above is against the shipped file, and the file is what the world derives
    for c in _bench()["concepts"]:
        assert c["prompts"] == world_a.bench_prompts(c["name"], c["category"])
