"""World B, the validation world: different in kind from the testbed, and a stranger to patchkit."""

from __future__ import annotations

import json

import pytest

from patchkit.core.world import GENERIC_WORLD
from patchkit.models import refs
from patchkit.services import testbed
from patchkit.services.worlds import world_for
from patchkit.testbed import world as world_a
from patchkit.testbed import world_b
from patchkit.testbed.conceptbench_build import build_validation_bench
from patchkit.testbed.paths import VALIDATION_BENCH, VALIDATION_MODEL


def test_world_b_shares_no_concept_word_phrasing_or_vocabulary_with_world_a():
    words_a = {w for name, _ in world_a.all_concepts() for w in name.split()}
    words_b = {w for name, _ in world_b.all_concepts() for w in name.split()}
    assert not words_a & words_b
    assert set(world_b.vocabulary_words()) != set(world_a.vocabulary_words())
    shared = set()
    for category in world_b.CATEGORIES:
        assert len(world_b.concepts(category)) >= 3
        assert not set(world_b.BENCH_TEMPLATES[category]) & set(world_a.BENCH_TEMPLATES[category])
        shared |= set(world_b.TRAINING_TEMPLATES[category]) & set(world_a.PROMPT_TEMPLATES[category])
    assert shared == {"a {color} {}"}  # the one phrasing both train on, with other colour words
    assert world_b.MAX_TOKENS != world_a.MAX_TOKENS


def test_the_shipped_world_b_is_what_its_module_builds():
    assert json.loads(VALIDATION_BENCH.read_text()) == build_validation_bench(world_b)
    tokenizer = json.loads((VALIDATION_MODEL / "tokenizer" / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == world_b.MAX_TOKENS


def test_patchkit_treats_world_b_as_a_model_it_does_not_know():
    # measured as a user's model would be: no registered world, no known concepts
    assert world_for(refs.resolve(str(VALIDATION_MODEL))) == GENERIC_WORLD


@pytest.mark.slow
def test_shipped_world_b_meets_the_testbed_quality_bars():
    result = testbed.check(world_name="validation", images_per_concept=32)
    assert result.passed, result.failures()
    assert len(result.generation) == len(world_b.all_concepts())
