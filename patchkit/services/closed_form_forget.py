"""The closed-form method (`--method closed-form`): solve the cross-attention edit, write the patch.

Loads only what the solve reads: the tokenizers and text encoders, and the attn2
projections as byte spans of the UNet's file. No UNet forward, no VAE, no images, and
no diffusers import; the patch is the same LoRA file, manifest and header as FMN's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch

from patchkit.backend.text_side import load_text_side
from patchkit.core.manifest import new_manifest
from patchkit.core.patch_id import patch_id_of
from patchkit.core.progress import Progress
from patchkit.errors import InputError, ModelMismatchError, UsageError
from patchkit.io.tensor_spans import SpanReader, TensorSpan
from patchkit.models import weights
from patchkit.services.forget_plan import ForgetPlan, default_name, fit_to_model
from patchkit.services.forget_record import ForgetResult, clock, concept_records, score_attack_and_write
from patchkit.services.patches import base_record
from patchkit.services.preservation import RetainSet
from patchkit.training.closed_form import ClosedFormOutcome, solve
from patchkit.training.prompts import TrainingPrompt
from patchkit.training.settings import ClosedFormSettings, check_closed_form_settings

ROBUST_ROUNDS = 2  # --robust: RECE-style rounds after the first solve (docs/attack.md)


def check_request(plan: ForgetPlan) -> None:
    """Refuse what the closed form cannot do, before anything loads."""
    request = plan.request
    check_closed_form_settings(request.closed_form)
    if request.images_dir is not None:
        raise UsageError("--method closed-form reads no images: it solves on the text encoder's states",
                         hint="drop --images, or train with --method fmn")  # fmt: skip
    if request.settings.textual_inversion:
        raise UsageError("--ti learns a token from images; --method closed-form uses none",
                         hint="drop --ti, or train with --method fmn")  # fmt: skip


def projection_spans(unet: Mapping[str, TensorSpan], modules: tuple[str, ...], width: int,
                     rank: int) -> dict[str, TensorSpan]:  # fmt: skip
    """Every cross-attention projection the patch edits, by module name; shapes checked, nothing read."""
    chosen = {key[: -len(".weight")]: span for key, span in unet.items()
              if key.endswith(".weight") and key[: -len(".weight")].endswith(modules)}  # fmt: skip
    if not chosen:
        raise ModelMismatchError(f"the UNet has no layer ending with {', '.join(modules)}",
                                 hint="patchkit edits Stable Diffusion 1.x, 2.x and XL UNets")  # fmt: skip
    for name, span in chosen.items():
        if len(span.shape) != 2 or span.shape[1] != width:
            raise ModelMismatchError(
                f"{name} reads {span.shape[-1]}-wide states but the text encoders give {width}",
                hint="check that the checkpoint and its --config are the same model",
            )
    limit = min(min(span.shape) for span in chosen.values())
    if not 1 <= rank <= limit:
        raise UsageError(
            f"rank {rank} is outside 1..{limit} for these layers", hint=f"pass --rank between 1 and {limit}"
        )
    return dict(sorted(chosen.items()))


def read_projections(spans: Mapping[str, TensorSpan]) -> Iterator[tuple[str, torch.Tensor]]:
    """Each projection's weight in float32, read when the solve reaches it."""
    with SpanReader() as reader:
        for name, span in spans.items():
            weight = reader.tensor(span).float()
            if not bool(torch.isfinite(weight).all()):
                raise InputError(f"{name} in the base model holds NaN or infinite values",
                                 hint="the checkpoint is damaged: re-download or re-export it")  # fmt: skip
            yield name, weight


def run(plan: ForgetPlan, progress: Progress | None = None, warn: Callable[[str], None] | None = None) -> ForgetResult:
    """Solve the plan's edit in closed form and write the patch atomically."""
    check_request(plan)
    request, settings = plan.request, plan.request.closed_form
    if request.robust and not settings.adversarial_rounds:
        settings = replace(settings, adversarial_rounds=ROBUST_ROUNDS)
    concepts = list(request.concepts)
    if settings.positions == "prompt" and warn:
        warn(
            "--positions prompt leaves the padding states out of the solve; where a model reads them, the concept can "
            "survive there (on the testbed circle, ring, triangle and gore did): check the patch with patchkit score"
        )
    info = weights.describe(plan.ref, progress)
    spans = weights.model_spans(plan.ref, info.configs)
    text = load_text_side(plan.ref.config_folder, info.configs, spans)
    items, retain = fit_to_model(plan, text, warn)
    found = projection_spans(spans["unet"], settings.modules, text.width, settings.rank)

    def stage(message: str) -> None:
        if progress:
            progress(message, 0, 1, {})

    outcome = solve(text, read_projections(found), concepts, items, retain.prompts, settings, stage)
    if not all(bool(torch.isfinite(t).all()) for t in outcome.tensors.values()):
        raise InputError("the solve gave NaN or infinite values", hint="raise --ridge (the default is 0.01)")
    created, seconds = clock(outcome.seconds)
    manifest = new_manifest(
        patch_id=patch_id_of(outcome.tensors),
        name=request.name or default_name(concepts),
        version=request.version,
        base=base_record(info, request.model.reference),
        concepts=concept_records(concepts, {}),
        method={
            "name": "closed-form",
            "training_seconds": seconds,
            "settings": _settings_record(settings, outcome, items, retain, request.robust),
        },
        layout={"keys": "peft", "rank": settings.rank, "modules": list(settings.modules)},
        created_at=created,
        author=request.author or None,
        license=request.license_id or None,
    )
    report, attacks = score_attack_and_write(
        manifest, request, outcome.tensors, concepts,
        family=info.family, rank=settings.rank, resolution=info.resolution, progress=progress,
    )  # fmt: skip
    return ForgetResult(
        output=request.output,
        manifest=manifest,
        steps=0,
        seconds=outcome.seconds,
        bytes=request.output.stat().st_size,
        first_loss=None,
        last_loss=None,
        base_fingerprint=info.fingerprint,
        images_generated=False,
        factorisation_error=outcome.factorisation_error,
        scores=report,
        attacks=attacks,
        method="closed-form",
    )


def _settings_record(
    settings: ClosedFormSettings,
    outcome: ClosedFormOutcome,
    items: Sequence[TrainingPrompt],
    retain: RetainSet,
    robust: bool,
) -> dict[str, Any]:
    return {
        **asdict(settings),
        "robust": robust,
        "modules": list(settings.modules),
        "retain_prompts": retain.prompts,
        "retain_sources": retain.sources,
        "training_prompts": [it.prompt for it in items],
        "anchors": [it.anchor for it in items],  # what each training prompt was mapped to
        "moved_states": outcome.edited_states,
        "held_states": outcome.preserved_states,
        "factorisation_error": outcome.factorisation_error,
    }
