"""`patchkit forget` and `patchkit correct`: train a Forget-Me-Not patch, write it as a diffusers/PEFT LoRA file."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from patchkit.backend import pipeline
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.core.manifest import ConceptRecord, new_manifest
from patchkit.core.patch_id import patch_id_of
from patchkit.core.progress import Progress
from patchkit.core.prompt_text import first_control_character
from patchkit.core.world import World
from patchkit.errors import UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.images import load_image_folder
from patchkit.io.tensors_out import save_tensors
from patchkit.models import weights
from patchkit.models.refs import ModelRef, ModelSource
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.patches import base_record, created_at, write_patch
from patchkit.services.preservation import RetainSet, retain_set
from patchkit.services.worlds import world_for
from patchkit.training.fit import check_retain_fits, readable_prompts
from patchkit.training.fmn import ForgetOutcome, train
from patchkit.training.prompts import (
    Concept,
    TrainingPrompt,
    check_categories,
    check_template,
    mentions,
    training_prompts,
    with_placeholders,
)
from patchkit.training.settings import ForgetSettings, check_settings, training_image_seeds

if TYPE_CHECKING:
    from patchkit.services.score import ScoreReport


@dataclass(frozen=True)
class ForgetResult:
    output: Path
    manifest: dict[str, Any]
    steps: int
    seconds: float
    bytes: int
    first_loss: float
    last_loss: float
    base_fingerprint: str
    images_generated: bool
    factorisation_error: float | None
    scores: ScoreReport | None  # when scored
    embeddings: Path | None = None  # --ti: the learnt placeholder embeddings, beside the patch

    @property
    def concept_labels(self) -> list[str]:
        return [c["name"] + (f" -> {c['target']}" if "target" in c else "") for c in self.manifest["concepts"]]

    def to_json(self) -> dict[str, Any]:
        concepts = self.manifest["concepts"]
        summary: dict[str, Any] = {
            "output": str(self.output),
            "patch_id": self.manifest["patch_id"],
            "name": self.manifest["name"],
            "concepts": self.concept_labels,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "bytes": self.bytes,
            "loss": {"first": self.first_loss, "last": self.last_loss},
            "base_fingerprint": self.base_fingerprint,
            "mscores": {c["name"]: c["mscore"]["prompt"] for c in concepts if "mscore" in c},
            "collateral": self.manifest.get("collateral"),
        }
        if self.factorisation_error is not None:
            summary["factorisation_error"] = self.factorisation_error
        if self.embeddings is not None:
            summary["ti_embeddings"] = str(self.embeddings)
        return summary


def _clock(seconds: float) -> tuple[str, float | None]:
    """Creation time and training seconds for the header.

    With SOURCE_DATE_EPOCH set (the reproducible-builds convention) the time is that
    epoch and the seconds are left out, so the same inputs and seed give identical bytes.
    """
    reproducible = os.environ.get("SOURCE_DATE_EPOCH") is not None
    return created_at(), None if reproducible else round(seconds, 3)


def default_name(concepts: Sequence[Concept]) -> str:
    parts = [c.name if c.target is None else f"{c.name}-to-{c.target}" for c in concepts[:3]]
    verb = "correct" if any(c.target for c in concepts) else "forget"
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join([verb, *parts]).lower()).strip("-")
    return slug[:100] or verb


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


def _mscores(report: Any, concepts: Sequence[Concept]) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    by_name = {r.concept: r for r in report.concepts}
    scores = {}
    for concept in concepts:
        result = by_name.get(concept.name)
        if result is None:
            continue
        entry: dict[str, Any] = {
            "bench": report.bench,
            "definition": report.definition,
            "prompt": {"before": result.before.score, "after": result.after.score},
        }
        if result.capacity_before is not None and result.capacity_after is not None:
            entry["capacity"] = {"before": result.capacity_before.score, "after": result.capacity_after.score}
        scores[concept.name] = entry
    return scores, dict(report.collateral)


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
    if request.images_dir is not None:  # fail on a bad folder before loading anything heavy
        for concept in concepts:
            load_image_folder(request.images_dir if len(concepts) == 1 else request.images_dir / concept.name)
    given = [check_template(t) for t in request.templates] if request.templates else None
    _check_prompt_text(request)
    ref = request.model.resolve()
    world = world_for(ref)
    items = training_prompts(concepts, world.templates, given, world.context_templates)
    templates = {i: list(given or world.templates[c.category]) for i, c in enumerate(concepts)}
    return ForgetPlan(request, ref, world, items, templates)


def _check_prompt_text(request: ForgetRequest) -> None:
    if any(not p.strip() for p in request.retain_prompts):
        raise UsageError("a --retain prompt is empty", hint='--retain "a photo of a dog"')
    for option, texts in (("--prompt", request.templates or ()), ("--retain", request.retain_prompts)):
        for text in texts:
            bad = first_control_character(text)
            if bad is not None:
                raise UsageError(f"a {option} prompt holds the control character U+{ord(bad):04X}",
                                 hint="prompts are plain text")  # fmt: skip


def _fit_to_model(
    plan: ForgetPlan, pipe: Any, warn: Callable[[str], None] | None
) -> tuple[list[TrainingPrompt], RetainSet]:
    """The training prompts the model reads whole, and the retain set, both for this model's tokenizer."""
    request, concepts = plan.request, list(plan.request.concepts)
    check_retain_fits(pipe.tokenizer, request.retain_prompts)
    readable = readable_prompts(pipe.tokenizer, plan.items, concepts, user_written=bool(request.templates), warn=warn)
    lost = set(readable.dropped)
    templates = {i: [t for t in ts if t.format(concepts[i].name) not in lost] for i, ts in plan.templates.items()}
    retain = retain_set(plan.world, concepts, templates, request.retain_prompts,
                        defaults=request.default_retain, pipe=pipe)  # fmt: skip
    return readable.kept, retain


def forget(
    request: ForgetRequest, progress: Progress | None = None, warn: Callable[[str], None] | None = None
) -> ForgetResult:
    """Forget (or, for concepts with a target, correct) the request's concepts; write the patch atomically.

    `warn` hears about training prompts dropped because the model's context truncates them.
    """
    plan = plan_forget(request)
    concepts, settings = list(request.concepts), request.settings
    info = weights.describe(plan.ref)
    pipe = pipeline.load_pipeline(plan.ref)
    items, retain = _fit_to_model(plan, pipe, warn)
    # Corrections train on what the prompt should now draw: the target's images.
    shown = {
        i: [it.anchor if concepts[i].target else it.prompt for it in items if it.concept == i]
        for i in range(len(concepts))
    }
    images, owners = _training_images(pipe, concepts, shown, request.images_dir, settings, progress)
    placeholders: dict[int, str] = {}
    learnt: dict[str, Any] = {}
    if settings.textual_inversion:
        pipe, placeholders, learnt = _learn_placeholders(pipe, concepts, images, owners, plan.templates,
                                                         settings, progress)  # fmt: skip
        items = with_placeholders(items, concepts, placeholders)
    outcome = train(pipe, concepts, items, images, owners, retain.prompts, settings, progress)
    del pipe
    manifest = _manifest(plan, info, outcome, items, retain, placeholders, images_digest(images))
    report = None
    if request.score_bench is not False:
        report = _score_with(request.model, outcome.tensors, concepts, request.score_bench, progress)
        scores, collateral = _mscores(report, concepts)
        for entry in manifest["concepts"]:
            if entry["name"] in scores:
                entry["mscore"] = scores[entry["name"]]
        manifest["collateral"] = collateral
    output = request.output
    write_patch(output, outcome.tensors, manifest, family=info.family, rank=settings.rank,
                resolution=info.resolution, base_name=request.model.reference)  # fmt: skip
    if learnt:
        save_tensors(embeddings_path(output), learnt)
    return ForgetResult(
        output=output,
        manifest=manifest,
        steps=settings.steps,
        seconds=outcome.seconds,
        bytes=output.stat().st_size,
        first_loss=outcome.first_loss,
        last_loss=outcome.last_loss,
        base_fingerprint=info.fingerprint,
        images_generated=request.images_dir is None,
        factorisation_error=outcome.factorisation_error,
        scores=report,
        embeddings=embeddings_path(output) if placeholders else None,
    )


def _manifest(
    plan: ForgetPlan, info: weights.ModelInfo, outcome: ForgetOutcome, items: Sequence[TrainingPrompt],
    retain: RetainSet, placeholders: Mapping[int, str], images_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """The patch's manifest (schemas/manifest.schema.json), before any M-Scores are added."""
    request, settings = plan.request, plan.request.settings
    concepts = list(request.concepts)
    created, seconds = _clock(outcome.seconds)
    concept_records: list[ConceptRecord] = []
    for i, c in enumerate(concepts):
        record: ConceptRecord = {"name": c.name, "category": c.category, "action": c.action,
                                 "token": placeholders.get(i, c.name)}  # fmt: skip
        if c.target:
            record["target"] = c.target
        if c.context:
            record["context"] = c.context
        concept_records.append(record)
    settings_record = {
        **asdict(settings),
        "modules": list(settings.modules),
        "retain_prompts": retain.prompts,
        "retain_sources": retain.sources,
        "training_prompts": [it.prompt for it in items],
        "training_images": "given" if request.images_dir is not None else "generated by the base model",
        **({"factorisation_error": outcome.factorisation_error} if settings.full else {}),
    }
    return new_manifest(
        patch_id=patch_id_of(outcome.tensors),
        name=request.name or default_name(concepts),
        version=request.version,
        base=base_record(info, request.model.reference),
        concepts=concept_records,
        method={
            "name": "fmn",
            "seed": settings.seed,
            "training_seconds": seconds,
            "images_sha256": images_sha256,
            "settings": settings_record,
        },
        layout={"keys": "peft", "rank": settings.rank, "modules": list(settings.modules)},
        created_at=created,
        author=request.author or None,
        license=request.license_id or None,
    )


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


def embeddings_path(output: Path) -> Path:
    """Where --ti leaves the learnt embeddings: beside the patch, never inside it."""
    return output.with_name(f"{output.stem}.ti.safetensors")


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


def _score_with(
    source: ModelSource, tensors: Mapping[str, Any], concepts: Sequence[Concept], bench: Path | None,
    progress: Progress | None,
) -> Any:  # fmt: skip
    from patchkit.services.score import score

    with tempfile.TemporaryDirectory(prefix="patchkit-score-") as folder:
        draft = Path(folder) / "draft.safetensors"
        save_tensors(draft, tensors)
        return score(source, patches=[draft], bench_path=bench, targets=[c.name for c in concepts], progress=progress)
