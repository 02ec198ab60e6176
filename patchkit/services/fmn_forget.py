"""The Forget-Me-Not method: generate the concept's images, train the adapters, write the patch."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from PIL import Image

from patchkit.backend import pipeline
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.core.manifest import new_manifest
from patchkit.core.patch_id import patch_id_of
from patchkit.core.progress import Progress
from patchkit.errors import UsageError
from patchkit.io.images import load_image_folder
from patchkit.io.tensors_out import save_tensors
from patchkit.models import weights
from patchkit.services.forget_plan import ForgetPlan, default_name, embeddings_path, fit_to_model
from patchkit.services.forget_record import ForgetResult, clock, concept_records, score_attack_and_write
from patchkit.services.patches import base_record
from patchkit.services.preservation import RetainSet
from patchkit.training.capacity import erase_capacity
from patchkit.training.fmn import ForgetOutcome, train
from patchkit.training.prompts import Concept, TrainingPrompt, with_placeholders
from patchkit.training.settings import NOT_USED_BY_ROBUST, CapacitySettings, ForgetSettings, training_image_seeds


def images_digest(images: Sequence[Image.Image]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.width}x{image.height}\n".encode() + image.tobytes())
    return digest.hexdigest()


def _training_images(
    pipe: Any, concepts: Sequence[Concept], prompts_by_concept: dict[int, list[str]], images_dir: Path | None,
    settings: ForgetSettings, progress: Progress | None,
) -> tuple[list[Image.Image], list[int]]:  # fmt: skip
    if images_dir is not None:
        if len(concepts) == 1:
            images = load_image_folder(images_dir)
            return images, [0] * len(images)
        images, owners = [], []
        for index, concept in enumerate(concepts):
            mine = load_image_folder(images_dir / concept.name)
            images += mine
            owners += [index] * len(mine)
        return images, owners
    prompts: list[str] = []
    owners = []
    for index in range(len(concepts)):
        for k in range(settings.images_per_concept):
            choices = prompts_by_concept[index]
            prompts.append(choices[k % len(choices)])
            owners.append(index)
    seeds = training_image_seeds(settings.seed, len(prompts))
    made = 0

    def on_batch(n: int) -> None:
        nonlocal made
        made += n
        if progress:
            progress("generating training images with the base model", made, len(prompts), {})

    return generate(pipe, prompts, seeds, SamplerSettings(), on_batch), owners


def _retain_images(
    pipe: Any, prompts: Sequence[str], drawn: int, settings: ForgetSettings, capacity: CapacitySettings,
    progress: Progress | None,
) -> list[Image.Image]:  # fmt: skip
    """--robust: one image per retain prompt (up to capacity.retain_images), drawn by the base on the
    seeds after the concept's own, so their latents can be held as the base denoises them."""
    chosen = list(prompts[: capacity.retain_images])
    if not chosen:
        raise UsageError("--robust holds the retain prompts on their own images, and this forget has none",
                         hint="drop --no-default-retain, or give --retain prompts")  # fmt: skip
    seeds = training_image_seeds(settings.seed, drawn + len(chosen))[drawn:]
    made = 0

    def on_batch(n: int) -> None:
        nonlocal made
        made += n
        if progress:
            progress("generating the retain prompts' images with the base model", made, len(chosen), {})

    return generate(pipe, chosen, seeds, SamplerSettings(), on_batch)


def run(plan: ForgetPlan, progress: Progress | None = None, warn: Callable[[str], None] | None = None) -> ForgetResult:
    """Train the plan's FMN patch and write it atomically."""
    request = plan.request
    concepts, settings = list(request.concepts), request.settings
    info = weights.describe(plan.ref)
    pipe = pipeline.load_pipeline(plan.ref)
    items, retain = fit_to_model(plan, pipe, warn)
    # Corrections train on what the prompt should now draw: the target's images.
    shown = {
        i: [it.anchor if concepts[i].target else it.prompt for it in items if it.concept == i]
        for i in range(len(concepts))
    }
    capacity = request.capacity
    drawn = replace(settings, images_per_concept=capacity.images_per_concept) if request.robust else settings
    images, owners = _training_images(pipe, concepts, shown, request.images_dir, drawn, progress)
    placeholders: dict[int, str] = {}
    learnt: dict[str, Any] = {}
    if settings.textual_inversion:
        pipe, placeholders, learnt = _learn_placeholders(pipe, concepts, images, owners, plan.templates,
                                                         settings, progress)  # fmt: skip
        items = with_placeholders(items, concepts, placeholders)
    if request.robust:
        retain_images = _retain_images(pipe, retain.prompts, len(images), settings, capacity, progress)
        outcome = erase_capacity(pipe, concepts, items, images, owners, retain.prompts, retain_images, settings,
                                 capacity, progress)  # fmt: skip
    else:
        outcome = train(pipe, concepts, items, images, owners, retain.prompts, settings, progress)
    del pipe
    manifest = _manifest(plan, info, outcome, items, retain, placeholders, images_digest(images))
    report, attacks = score_attack_and_write(
        manifest, request, outcome.tensors, concepts,
        family=info.family, rank=settings.rank, resolution=info.resolution, progress=progress,
    )  # fmt: skip
    output = request.output
    if learnt:
        save_tensors(embeddings_path(output), learnt)
    return ForgetResult(
        output=output,
        manifest=manifest,
        steps=request.capacity.steps if request.robust else settings.steps,
        seconds=outcome.seconds,
        bytes=output.stat().st_size,
        first_loss=outcome.first_loss,
        last_loss=outcome.last_loss,
        base_fingerprint=info.fingerprint,
        images_generated=request.images_dir is None,
        factorisation_error=outcome.factorisation_error,
        scores=report,
        attacks=attacks,
        embeddings=embeddings_path(output) if placeholders else None,
    )


def _manifest(
    plan: ForgetPlan, info: weights.ModelInfo, outcome: ForgetOutcome, items: Sequence[TrainingPrompt],
    retain: RetainSet, placeholders: Mapping[int, str], images_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """The patch's manifest (schemas/manifest.schema.json), before any M-Scores are added."""
    request, settings = plan.request, plan.request.settings
    concepts = list(request.concepts)
    created, seconds = clock(outcome.seconds)
    modules = request.capacity.modules if request.robust else settings.modules
    fmn_record = asdict(settings)
    if request.robust:  # what --robust does not train with is not recorded as if it had been
        fmn_record = {k: v for k, v in fmn_record.items() if k not in NOT_USED_BY_ROBUST}
    settings_record = {
        **fmn_record,
        "modules": list(modules),
        "retain_prompts": retain.prompts,
        "retain_sources": retain.sources,
        "training_prompts": [it.prompt for it in items],
        "anchors": [it.anchor for it in items],  # what each training prompt was steered to
        "robust": request.robust,
        # --robust trains by training/capacity.py, with these settings (steps, rate, modules, ...)
        **({"capacity": {**asdict(request.capacity), "modules": list(modules)}} if request.robust else {}),
        "training_images": "given" if request.images_dir is not None else "generated by the base model",
        **({"factorisation_error": outcome.factorisation_error} if settings.full else {}),
    }
    return new_manifest(
        patch_id=patch_id_of(outcome.tensors),
        name=request.name or default_name(concepts),
        version=request.version,
        base=base_record(info, request.model.reference),
        concepts=concept_records(concepts, placeholders),
        method={
            "name": "fmn",
            "seed": settings.seed,
            "training_seconds": seconds,
            "images_sha256": images_sha256,
            "settings": settings_record,
        },
        layout={"keys": "peft", "rank": settings.rank, "modules": list(modules)},
        created_at=created,
        author=request.author or None,
        license=request.license_id or None,
    )


def _learn_placeholders(
    pipe: Any, concepts: Sequence[Concept], images: Sequence[Image.Image], owners: Sequence[int],
    templates: Mapping[int, Sequence[str]], settings: ForgetSettings, progress: Progress | None,
) -> tuple[Any, dict[int, str], dict[str, Any]]:  # fmt: skip
    """Textual inversion per concept on its training images.

    Returns the pipeline that knows every placeholder, the placeholders by concept, and the
    learnt vectors in a file layout diffusers' load_textual_inversion reads (see
    learnt_embeddings): a by-product for analysis, never part of the patch.
    """
    from patchkit.backend.inversion import InversionBudget, invert_token, learnt_embeddings

    placeholders: dict[int, str] = {}
    for index, concept in enumerate(concepts):
        slug = re.sub(r"[^a-z0-9]+", "-", concept.name.lower()).strip("-") or "concept"
        placeholder = f"<{slug}>" if f"<{slug}>" not in placeholders.values() else f"<{slug}-{index}>"
        mine = [image for image, owner in zip(images, owners, strict=True) if owner == index]
        budget = InversionBudget(steps=settings.ti_steps, placeholder=placeholder)

        def step(done: int, name: str = concept.name) -> None:
            if progress:
                progress(f"learning a token for {name} (textual inversion)", done, settings.ti_steps, {})

        template = templates[index][0]  # "{}" marks where the concept goes
        pipe = invert_token(pipe, mine, template, budget=budget, seed=settings.seed + index, on_step=step)
        placeholders[index] = placeholder
    return pipe, placeholders, learnt_embeddings(pipe, list(placeholders.values()))
