"""Never tune on what you measure: what a testbed forget trains and preserves on is disjoint
from what the testbed's ConceptBench scores with, in prompts and in seeds.

The README's quality table is measured on the bench; defaults are chosen by
bench/tradeoff.py on world A's tuning split (other prompts, other seeds: its trained
phrasings, and transfer phrasings that nothing trains, benches or attacks with) and never
on the bench or on the validation world.
"""

from __future__ import annotations

import json

import pytest

from patchkit.backend import pipeline
from patchkit.core import attack_prompts, robust_prompts
from patchkit.models import refs
from patchkit.services.forget_plan import plan_forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.models import ModelSource
from patchkit.services.preservation import retain_set
from patchkit.services.worlds import world_for
from patchkit.testbed import tuning
from patchkit.testbed import world as world_a
from patchkit.testbed.paths import TESTBED_BENCH
from patchkit.testbed.testbed_world import testbed_world as world_a_of
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
def test_training_and_retain_prompts_never_meet_the_bench(testbed_pipe, tmp_path, name, category):
    ref = refs.resolve("testbed")
    world = world_for(ref)
    concept = Concept(name, category)
    # what a default forget trains with: the category's templates and, with --every-template,
    # every other category's too
    plan = plan_forget(ForgetRequest(ModelSource("testbed"), (concept,), tmp_path / "p.safetensors"))
    items = plan.items
    assert len(items) > len(training_prompts([concept], world.templates))
    templates = {0: list(world.templates[category])}
    retain = retain_set(world, [concept], templates, (), defaults=True, pipe=testbed_pipe)
    bench = _bench_prompts()
    assert items and retain.prompts
    assert not {it.prompt for it in items} & bench
    assert not set(retain.prompts) & bench
    assert set(retain.sources) == {"world", "neighbours", "generic"}
    # nor up to any concept's name: a causal encoder would give that concept's tokens the
    # states the prompts that score it give them
    for other, other_category in world_a.all_concepts():
        benched = {_through_concept(p, other) for p in world_a.bench_prompts(other, other_category)}
        for trained in [it.prompt for it in items] + list(retain.prompts):
            if other in trained:
                assert _through_concept(trained, other) not in benched, (other, trained)


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


# World A's tuning split (patchkit/testbed/tuning.py): bench/tradeoff.py picks defaults on it.
# Its transfer phrasings must be new to every part that trains or reports.


def _every_training_phrasing(name: str) -> set[str]:
    # all the testbed world's phrasings in every category (what a forget trains with, with
    # every_template too, and what its base was trained on), and --robust's compositions
    world = world_a_of()
    others = world.others_by_category(name)
    phrasings: set[str] = set()
    for category in world_a.CATEGORIES:
        robust = robust_prompts.composition_templates(category, others, world.modifiers)
        phrasings |= {t.format(name) for t in (*world.templates[category], *robust)}
        for t in world_a.PROMPT_TEMPLATES[category]:
            phrasings |= {t.format(name, color=c, object=o) for c in world_a.COLORS for o in world_a.OBJECTS}
        phrasings |= {t.format(name) for t in (world.context_templates or {}).get(category, ())}
    return phrasings


def _attacked(name: str, category: str) -> set[str]:
    world = world_a_of()
    others = world.others_by_category(name)
    return set(attack_prompts.composition_prompts(name, category, others, world.modifiers, limit=10_000))


def _through_concept(prompt: str, name: str) -> str:
    # a causal text encoder gives the concept's tokens the same states in two prompts that
    # agree up to the concept, so "the same phrasing" is judged on that prefix
    return prompt[: prompt.index(name) + len(name)] if name in prompt else prompt


@pytest.mark.parametrize(("name", "category"), world_a.all_concepts())
def test_transfer_phrasings_are_never_trained_benched_or_attacked(testbed_pipe, name, category):
    transfer = tuning.transfer_prompts(name, category)
    assert len(set(transfer)) == len(tuning.TRANSFER_TEMPLATES[category]) >= 2
    assert all(name in p for p in transfer)
    ref = refs.resolve("testbed")
    retain = retain_set(world_for(ref), [Concept(name, category)], {0: list(world_for(ref).templates[category])},
                        (), defaults=True, pipe=testbed_pipe)  # fmt: skip
    for what, others in (("trained", _every_training_phrasing(name)), ("benched", _bench_prompts()),
                         ("attacked", _attacked(name, category)), ("retained", set(retain.prompts))):  # fmt: skip
        assert others, what
        seen = {_through_concept(p, name) for p in others}
        assert not {_through_concept(p, name) for p in transfer} & seen, what


def test_the_trained_phrasing_half_is_what_a_testbed_forget_trains_with():
    world = world_a_of()
    for name, category in world_a.all_concepts():
        trained = {it.prompt for it in training_prompts([Concept(name, category)], world.templates)}
        assert trained <= set(world.concept_prompts[name]) | {""}


def test_tuning_seeds_never_meet_bench_seeds_or_each_other():
    # 64 images per concept and half is far more than bench/tradeoff.py draws (4 per prompt)
    drawn: list[int] = []
    for first in (tuning.TRAINED_SEED, tuning.TRANSFER_SEED):
        for index in range(len(world_a.all_concepts())):
            drawn.extend(tuning.split_seeds(first, index, 64))
    assert len(drawn) == len(set(drawn))
    assert not set(drawn) & _bench_seeds()
    assert not set(drawn) & set(training_image_seeds(0, 13 * 64))
    with pytest.raises(ValueError, match="at most"):
        tuning.split_seeds(tuning.TRANSFER_SEED, 0, tuning.SEED_STRIDE + 1)


@pytest.mark.parametrize(("name", "category"), world_a.all_concepts())
def test_robust_rounds_place_their_adversary_in_a_training_phrasing_never_a_bench_prompt(tmp_path, name, category):
    # forget --robust learns its adversarial tokens (training/capacity.py) in the forget's own
    # first phrasing and trains them in its training prompts: never in a phrasing the bench
    # scores. (For styles the testbed's one style phrasing is also attack/1's inversion
    # phrasing; docs/attack.md says so.)
    from patchkit.training.capacity import _template

    concept = Concept(name, category)
    plan = plan_forget(ForgetRequest(ModelSource("testbed"), (concept,), tmp_path / "p.safetensors", robust=True))
    template = _template(plan.items, concept, 0)
    assert template.format(name) in {it.prompt for it in plan.items}
    assert template.format(name) not in _bench_prompts()
    # and its rounds' seeds stay apart from the bench's
    from patchkit.training.capacity import _ROUND_SEED_OFFSET

    assert training_noise_seed(0) + _ROUND_SEED_OFFSET not in _bench_seeds()


@pytest.mark.parametrize(("name", "category"), world_a.all_concepts())
def test_the_robust_tuning_probe_shares_no_phrasing_or_seed_with_attack1_or_the_adversary(tmp_path, name, category):
    # bench/robust_tuning.py chooses --robust's settings with an inversion of its own: it must
    # not learn in attack/1's inversion phrasing nor in the one --robust's adversary uses
    from patchkit.services.attack_runner import JUDGE_SEED_BASE
    from patchkit.services.score import CAPACITY_TEMPLATES
    from patchkit.training.capacity import _template

    concept = Concept(name, category)
    plan = plan_forget(ForgetRequest(ModelSource("testbed"), (concept,), tmp_path / "p.safetensors", robust=True))
    drawn_from, learnt_in = tuning.probe_templates(category)
    probe = {_through_concept(t.format(name), name) for t in (drawn_from, learnt_in)}
    assert len(probe) == 2
    elsewhere = {CAPACITY_TEMPLATES[category].format(name), _template(plan.items, concept, 0).format(name),
                 *_bench_prompts()}  # fmt: skip
    assert not probe & {_through_concept(p, name) for p in elsewhere}
    index = [n for n, _ in world_a.all_concepts()].index(name)
    seeds = {s for first in (tuning.PROBE_IMAGE_SEED, tuning.PROBE_JUDGE_SEED)
             for s in tuning.split_seeds(first, index, 64)}  # fmt: skip
    split = {s for first in (tuning.TRAINED_SEED, tuning.TRANSFER_SEED)
             for i in range(len(world_a.all_concepts())) for s in tuning.split_seeds(first, i, 64)}  # fmt: skip
    assert not seeds & (split | _bench_seeds() | set(training_image_seeds(0, 13 * 64)))
    assert max(seeds) < JUDGE_SEED_BASE
