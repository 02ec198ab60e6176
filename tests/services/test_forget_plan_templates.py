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


def test_corrections_disentanglements_and_user_prompts_keep_their_own_phrasings(tmp_path):
    out = tmp_path / "p.safetensors"
    for concepts, templates in (
        ((Concept("square", "object", target="circle"),), None),
        ((Concept("noir", "style", context="circle"),), None),
        ((Concept("circle", "object"),), ("a {} on a plate",)),
    ):
        plain = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, templates=templates, settings=OWN))
        every = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, templates=templates, settings=EVERY))
        assert every.items == plain.items


def test_the_closed_form_never_takes_them(tmp_path):
    out = tmp_path / "p.safetensors"
    concepts = (Concept("circle", "object"),)
    own = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=OWN))
    closed = plan_forget(ForgetRequest(ModelSource("testbed"), concepts, out, settings=EVERY, method="closed-form"))
    assert closed.items == own.items
