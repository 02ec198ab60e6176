import random

import numpy as np
import pytest

from patchkit.testbed import world


def test_rendering_is_deterministic():
    a = world.render(world.Scene("alice"), random.Random(3))
    b = world.render(world.Scene("alice"), random.Random(3))
    assert a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_world_has_the_required_concepts():
    assert len(world.concepts("id")) >= 4
    assert len(world.concepts("object")) >= 4
    assert len(world.concepts("style")) >= 3
    assert len(world.concepts("nsfw")) >= 1
    assert any(" " in name for name in world.concepts("id")), "one ID is multi-token"


@pytest.mark.parametrize(("a", "b"), [("alice", "bella"), ("carl", "john doe"), ("circle", "ring")])
def test_close_neighbours_look_alike_but_differ(a, b):
    def pixels(name):
        return np.asarray(world.render(world.Scene(name, color="red"), random.Random(0)), dtype=float)

    difference = np.abs(pixels(a) - pixels(b)).mean()
    assert 2 < difference < 40


def test_styles_change_the_palette_not_the_shape():
    plain = np.asarray(world.render(world.Scene("square", color="red"), random.Random(1)))
    neon = np.asarray(world.render(world.Scene("square", style="neon"), random.Random(1)))
    assert neon.mean() < plain.mean()  # black background
    assert neon[16, 16, 1] > 200  # bright green ink where the square is


def test_training_pairs_cover_every_concept():
    rng = random.Random(0)
    pairs = [world.sample_training_pair(rng) for _ in range(3000)]
    prompts = " ".join(p for p, _ in pairs)
    for name, _ in world.all_concepts():
        assert name in prompts
    assert sum(p == "" for p, _ in pairs) / len(pairs) == pytest.approx(0.10, abs=0.02)


def test_bench_prompts():
    assert world.bench_prompts("alice", "id") == ["a photo of alice"]
    assert world.bench_prompts("neon", "style") == [f"a {o} in the style of neon" for o in world.OBJECTS]
