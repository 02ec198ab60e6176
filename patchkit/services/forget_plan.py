"""A forget's plan: the request checked, its prompts and preservation settled, before anything heavy loads.

Shared by both methods (FMN and closed-form): every check that can refuse a request runs
here, so a bad option costs no model load.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from patchkit.core.layouts import kohya_sibling
from patchkit.core.prompt_text import first_control_character
from patchkit.core.robust_prompts import composition_templates
from patchkit.core.world import World
from patchkit.errors import UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.images import load_image_folder
from patchkit.models.refs import ModelRef
from patchkit.services.bench_file import check_targets, load_bench
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.preservation import RetainSet, retain_set
from patchkit.services.worlds import world_for
from patchkit.training.fit import check_retain_fits, in_own_words, readable_prompts
from patchkit.training.prompts import (
    Concept,
    TrainingPrompt,
    check_categories,
    check_template,
    mentions,
    training_prompts,
)
from patchkit.training.settings import ForgetSettings, check_settings


def default_name(concepts: Sequence[Concept]) -> str:
    parts = [c.name if c.target is None else f"{c.name}-to-{c.target}" for c in concepts[:3]]
    verb = "correct" if any(c.target for c in concepts) else "forget"
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join([verb, *parts]).lower()).strip("-")
    return slug[:100] or verb


@dataclass(frozen=True)
class ForgetPlan:
    """What a run will train on, settled before anything heavy loads."""

    request: ForgetRequest
    ref: ModelRef
    world: World
    items: list[TrainingPrompt]  # the training prompts and their anchors
    templates: dict[int, list[str]]  # per concept, the templates its prompts came from


def plan_forget(request: ForgetRequest) -> ForgetPlan:
    """Check the request and settle its prompts and preservation; refuse bad input before any work."""
    concepts, settings, output = list(request.concepts), request.settings, request.output
    if not concepts:
        raise UsageError(
            "no concept to forget",
            hint="patchkit forget testbed --concept circle --category object -o no-circle.safetensors",
        )
    check_categories(concepts)
    check_settings(settings)
    blank = next((c for c in concepts if not c.name.strip() or (c.target is not None and not c.target.strip())), None)
    if blank is not None:
        raise UsageError("a concept's name is empty", hint='name what to forget: -c circle, -c "john doe"')
    check_output_path(output, force=request.force)
    _check_extensions(concepts, settings)
    if settings.textual_inversion:
        check_output_path(embeddings_path(output), force=request.force)
    if request.kohya:
        check_output_path(kohya_path(output), force=request.force)
    if request.images_dir is not None:  # fail on a bad folder before loading anything heavy
        for concept in concepts:
            load_image_folder(request.images_dir if len(concepts) == 1 else request.images_dir / concept.name)
    given = [check_template(t) for t in request.templates] if request.templates else None
    _check_prompt_text(request)
    _check_anchor(request)
    _check_robust(request)
    ref = request.model.resolve()
    world = world_for(ref)
    if request.score_bench is not False:  # a bench that cannot score the result fails now, not after training
        bench, _ = load_bench(request.score_bench, world)
        check_targets(bench, [c.name for c in concepts], "forget")
    if request.attack is not None:  # the suite needs each concept's bench entry (judge, references): check now
        bench, _ = load_bench(request.attack.bench, world)
        check_targets(bench, [c.name for c in concepts], "forget")
    items = training_prompts(concepts, world.templates, given, world.context_templates)
    if request.method == "fmn" and settings.every_template:
        items += other_category_items(world, concepts, items)
    if request.robust:
        items += robust_items(world, concepts)
    if request.anchor is not None:
        items = [it if concepts[it.concept].target is not None else replace(it, anchor=request.anchor) for it in items]
    templates = {i: list(given or world.templates[c.category]) for i, c in enumerate(concepts)}
    return ForgetPlan(request, ref, world, items, templates)


def other_category_items(
    world: World, concepts: Sequence[Concept], items: Sequence[TrainingPrompt]
) -> list[TrainingPrompt]:
    """Each plain forget's concept also in the other categories' templates ("a portrait of circle"):
    the name in more contexts than its own category's phrasings give it. Corrections and
    disentanglements keep their own phrasings, which name a target or a context."""
    seen = {(it.concept, it.prompt) for it in items}
    out: list[TrainingPrompt] = []
    for index, concept in enumerate(concepts):
        if concept.target is not None or concept.context is not None:
            continue
        others = {c: ts for c, ts in world.templates.items() if c != concept.category}
        for item in training_prompts([replace(concept, category=c) for c in others], others):
            if (index, item.prompt) not in seen:
                seen.add((index, item.prompt))
                out.append(replace(item, concept=index, quiet=True))
    return out


def robust_items(world: World, concepts: Sequence[Concept]) -> list[TrainingPrompt]:
    """--robust: each concept also among the world's other concepts and modifiers (core/robust_prompts.py)."""
    out: list[TrainingPrompt] = []
    for index, concept in enumerate(concepts):
        others = world.others_by_category(concept.name)
        for c in concepts:  # the run's other concepts are not company for one another
            for names in others.values():
                if c.name in names:
                    names.remove(c.name)
        templates = composition_templates(concept.category, others, world.modifiers)
        out += [replace(item, concept=index) for item in training_prompts([concept], {concept.category: templates})]
    return out


def _check_anchor(request: ForgetRequest) -> None:
    """--anchor-to replaces a forget's anchors; a correction's anchor is its target, a disentanglement's
    keeps its context, so neither takes one."""
    if request.anchor is None:
        return
    if any(c.target is not None for c in request.concepts):
        raise UsageError("--anchor-to sets what a forget's prompts become; a correction's is its --to",
                         hint="drop --anchor-to, or use patchkit forget")  # fmt: skip
    if any(c.context is not None for c in request.concepts):
        raise UsageError("--anchor-to cannot be combined with --context: a disentanglement's anchor keeps its context",
                         hint="drop one of them")  # fmt: skip
    bad = first_control_character(request.anchor)
    if bad is not None:
        raise UsageError(f"--anchor-to holds the control character U+{ord(bad):04X}", hint="prompts are plain text")
    named = next((c.name for c in request.concepts if mentions(request.anchor, c.name)), None)
    if named is not None:
        raise UsageError(f'--anchor-to "{request.anchor}" names "{named}", the concept being forgotten',
                         hint='name what its prompts should draw instead, or "" for the empty prompt')  # fmt: skip


def _check_prompt_text(request: ForgetRequest) -> None:
    if any(not p.strip() for p in request.retain_prompts):
        raise UsageError("a --retain prompt is empty", hint='--retain "a photo of a dog"')
    for option, texts in (("--prompt", request.templates or ()), ("--retain", request.retain_prompts)):
        for text in texts:
            bad = first_control_character(text)
            if bad is not None:
                raise UsageError(f"a {option} prompt holds the control character U+{ord(bad):04X}",
                                 hint="prompts are plain text")  # fmt: skip


def fit_to_model(
    plan: ForgetPlan, pipe: Any, warn: Callable[[str], None] | None
) -> tuple[list[TrainingPrompt], RetainSet]:
    """The training prompts the model reads whole, and the retain set, both for this model's tokenizer."""
    request, concepts = plan.request, list(plan.request.concepts)
    check_retain_fits(pipe.tokenizer, request.retain_prompts)
    if request.anchor:
        check_retain_fits(pipe.tokenizer, [request.anchor], what="--anchor-to prompt")
    items = in_own_words(pipe.tokenizer, plan.items, concepts)
    readable = readable_prompts(pipe.tokenizer, items, concepts, user_written=bool(request.templates), warn=warn)
    lost = set(readable.dropped)
    templates = {i: [t for t in ts if t.format(concepts[i].name) not in lost] for i, ts in plan.templates.items()}
    retain = retain_set(plan.world, concepts, templates, request.retain_prompts,
                        defaults=request.default_retain, pipe=pipe)  # fmt: skip
    return readable.kept, retain


def _check_robust(request: ForgetRequest) -> None:
    """FMN --robust erases the concept's capacity: what it needs, before any work."""
    if not request.robust or request.method != "fmn":
        return
    if any(c.context is not None for c in request.concepts):
        raise UsageError("--robust erases the concept wherever it is drawn; --context keeps it outside its context",
                         hint="drop one of them")  # fmt: skip
    if request.settings.full:
        raise UsageError("--robust trains rank-r adapters; --full trains full deltas", hint="drop --full")
    if not request.default_retain and not request.retain_prompts:
        raise UsageError("--robust holds the retain prompts on their own images, and --no-default-retain leaves none",
                         hint='give --retain prompts, or drop --no-default-retain')  # fmt: skip


def _check_extensions(concepts: Sequence[Concept], settings: ForgetSettings) -> None:
    for concept in concepts:
        if concept.context is not None and (not concept.context.strip() or mentions(concept.context, concept.name)):
            raise UsageError(
                f"--context {concept.context!r} must name something other than {concept.name!r}",
                hint="-c noir --context circle stops noir acting on circles",
            )
    if not settings.textual_inversion:
        return
    if any(c.target for c in concepts):
        raise UsageError("--ti forgets through a token learnt from the concept's images; a correction has none",
                         hint="use --ti with patchkit forget")  # fmt: skip
    if settings.ti_steps < 1:
        raise UsageError(f"--ti-steps must be at least 1, not {settings.ti_steps}", hint="the default is 150")


def kohya_path(output: Path) -> Path:
    """Where --kohya writes the A1111/ComfyUI layout of the same patch: beside it, where `registry add` looks."""
    return kohya_sibling(output)


def embeddings_path(output: Path) -> Path:
    """Where --ti leaves the learnt embeddings: beside the patch, never inside it."""
    return output.with_name(f"{output.stem}.ti.safetensors")
