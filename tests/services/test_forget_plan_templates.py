"""ForgetSettings.every_template: a plain forget also trains its concept in the other categories' phrasings."""

from __future__ import annotations

from patchkit.models.refs import ModelSource
from patchkit.services.forget_plan import plan_forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.testbed.testbed_world import testbed_world as world_a_of
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

EVERY = ForgetSettings(every_template=True)
OWN = ForgetSettings(every_template=False)


def test_every_template_is_fmns_default():
    assert ForgetSettings().every_template is True


def test_every_template_adds_each_other_categorys_phrasings_once(tmp_path):
    out = tmp_path / "p.safetensors"
    concepts = (Concept("circle", "object"), Concept("noir", "style"))
    plain = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=OWN))
    every = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=EVERY))
    assert every.items[: len(plain.items)] == plain.items
    added = every.items[len(plain.items) :]
    templates = world_a_of().templates
    for index, concept in enumerate(concepts):
        mine = [it for it in every.items if it.concept == index]
        expected = {t.format(concept.name) for ts in templates.values() for t in ts}
        assert {it.prompt for it in mine} == expected
        assert len(mine) == len(expected)  # "{}" is in two categories, trained once
    for item in added:
        name = concepts[item.concept].name
        assert item.anchor == item.prompt.replace(name, "").replace("  ", " ").strip()
    assert "a portrait of circle" in {it.prompt for it in added}
    assert every.templates == plain.templates  # preservation is not widened with it


def test_corrections_and_disentanglements_keep_their_own_phrasings(tmp_path):
    out = tmp_path / "p.safetensors"
    for concepts in ((Concept("square", "object", target="circle"),), (Concept("noir", "style", context="circle"),)):
        plain = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=OWN))
        every = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=EVERY))
        assert every.items == plain.items


def test_user_prompts_come_first_and_the_other_categories_follow_quietly(tmp_path):
    # a user's --prompt replaces the concept's own category's phrasings, never the others'
    out = tmp_path / "p.safetensors"
    concepts = (Concept("circle", "object"),)
    given = ("a {} on a plate",)
    plain = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, templates=given, settings=OWN))
    every = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, templates=given, settings=EVERY))
    assert [it.prompt for it in plain.items] == ["a circle on a plate"]
    assert every.items[:1] == plain.items
    added = every.items[1:]
    others = {t.format("circle") for c, ts in world_a_of().templates.items() if c != "object" for t in ts}
    assert {it.prompt for it in added} == others - {"a circle on a plate"}
    assert all(it.quiet for it in added) and not plain.items[0].quiet
    assert every.templates == plain.templates


def test_the_closed_form_never_takes_them(tmp_path):
    out = tmp_path / "p.safetensors"
    concepts = (Concept("circle", "object"),)
    own = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=OWN))
    closed = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=EVERY, method="closed-form"))
    assert closed.items == own.items


def test_added_phrasings_in_words_the_model_spells_out_are_dropped():
    # World B's tokenizer (595 tokens) knows "a", "of", "drawing" but spells "photo" and
    # "portrait" in pieces: of the generic templates only "a {}" and "{}" are in its words.
    # What the user wrote is theirs to choose and is never dropped this way.
    from transformers import CLIPTokenizer

    from patchkit.core.world import GENERIC_TEMPLATES
    from patchkit.testbed.paths import TESTBED_MODEL, VALIDATION_MODEL
    from patchkit.training.fit import in_own_words
    from patchkit.training.prompts import TrainingPrompt

    concepts = [Concept("bolt", "id")]
    generic = [TrainingPrompt(0, t.format("bolt"), "", quiet=True) for ts in GENERIC_TEMPLATES.values() for t in ts]
    users = TrainingPrompt(0, "a photo of bolt", "a photo of")
    kept = in_own_words(CLIPTokenizer.from_pretrained(VALIDATION_MODEL / "tokenizer"), [users, *generic], concepts)
    assert kept[0] is users
    assert {it.prompt for it in kept[1:]} == {"a bolt", "bolt"}
    world_a = [TrainingPrompt(0, t.format("circle"), "", quiet=True) for ts in world_a_of().templates.values()
               for t in ts]  # fmt: skip
    tokenizer_a = CLIPTokenizer.from_pretrained(TESTBED_MODEL / "tokenizer")
    assert in_own_words(tokenizer_a, world_a, [Concept("circle", "object")]) == world_a


def test_added_phrasings_are_pulled_to_their_anchor_and_own_phrasings_pushed_past_it(tmp_path):
    """Negative guidance pushes away from what the base draws; in another category's phrasing that
    may be a neighbour ("a portrait of pastel" is a face), so the added phrasings get none."""
    from patchkit.training.fmn import guidance_for

    settings = ForgetSettings()
    concepts = (Concept("pastel", "style"), Concept("circle", "object", target="square"))
    plan = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, tmp_path / "p.safetensors", settings=settings))
    etas = {(it.concept, it.prompt): guidance_for(settings, it, concepts[it.concept]) for it in plan.items}
    assert etas[(0, "a painting in the style of pastel")] == settings.negative_guidance == 2.0
    assert etas[(0, "a portrait of pastel")] == 0.0  # an ID phrasing, added
    assert all(eta == 0.0 for (index, _), eta in etas.items() if index == 1)  # a correction never pushes
    before = ForgetSettings(added_phrasing_guidance=None, negative_guidance=1.0)
    assert {guidance_for(before, it, concepts[0]) for it in plan.items if it.concept == 0} == {1.0}
