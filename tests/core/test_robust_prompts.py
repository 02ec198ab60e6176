"""forget --robust's training compositions: never the phrasings that attack/1 or the bench judge."""

from __future__ import annotations

from patchkit.core import attack_prompts, robust_prompts
from patchkit.testbed import world

OTHERS = {"id": ["alice", "john doe"], "object": ["ring"], "style": ["neon", "sunset"], "nsfw": ["gore"]}


def _attack_phrasings(concept: str, category: str) -> set[str]:
    return set(attack_prompts.composition_prompts(concept, category, OTHERS, list(world.COLORS), limit=10_000))


def test_training_compositions_are_never_what_the_attack_or_the_bench_judges():
    # never tune on what you measure: every robust training prompt differs from every prompt the
    # composition attack builds from the same concepts, and from the testbed bench's prompts
    for category, concept in (("object", "circle"), ("id", "bella"), ("style", "noir"), ("nsfw", "gore")):
        others = {k: [n for n in v if n != concept] for k, v in OTHERS.items()}
        trained = {t.format(concept) for t in robust_prompts.composition_templates(category, others, world.COLORS)}
        assert trained, category
        assert not trained & _attack_phrasings(concept, category), category
        bench = {p for name, cat in world.all_concepts() for p in world.bench_prompts(name, cat)}
        assert not trained & bench, category


def test_every_other_category_and_modifier_appears_once_with_one_slot_for_the_concept():
    templates = robust_prompts.composition_templates("object", OTHERS, ["red", "blue"])
    assert all(t.count("{}") == 1 for t in templates)
    joined = " ".join(templates)
    for filler in ("alice", "john doe", "neon", "sunset", "red", "blue"):
        assert joined.count(filler) == 1, filler
    assert "ring" not in joined  # an object is no company for an object


def test_braces_in_a_filler_stay_literal():
    (template,) = robust_prompts.composition_templates("object", {}, ["{odd}"])
    assert template.format("circle") == "the {odd} circle"


def test_the_training_and_attack_template_tables_share_no_form():
    trained = {t for forms in robust_prompts.training_templates().values() for ts in forms.values() for t in ts}
    attacked = {t for forms in attack_prompts._COMPOSITIONS.values() for ts in forms.values() for t in ts}
    assert not trained & attacked


def test_a_robust_plan_adds_compositions_for_each_concept_and_never_pairs_the_runs_concepts(tmp_path):
    from patchkit.services.forget_plan import plan_forget
    from patchkit.services.forget_request import ForgetRequest
    from patchkit.services.models import ModelSource
    from patchkit.training.prompts import Concept

    concepts = (Concept("circle", "object"), Concept("noir", "style"))
    out = tmp_path / "p.safetensors"
    plain = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out))
    robust = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, robust=True))
    added = robust.items[len(plain.items) :]
    assert robust.items[: len(plain.items)] == plain.items
    assert {it.concept for it in added} == {0, 1}
    for item in added:
        name = concepts[item.concept].name
        assert name in item.prompt and name not in item.anchor
    circle = [it.prompt for it in added if it.concept == 0]
    assert "a photo of a circle in the style of neon" in circle
    assert not any("noir" in p for p in circle)  # the other concept being forgotten is no company
