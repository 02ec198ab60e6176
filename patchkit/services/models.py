"""Use cases on whole models: describe one, generate from one, convert its layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchkit.backend import pipeline
from patchkit.backend.sampling import SamplerSettings
from patchkit.core.grid import labelled_grid, stack_vertically
from patchkit.core.progress import Progress
from patchkit.errors import UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.images import save_png
from patchkit.models import refs, weights
from patchkit.models.refs import ModelSource


def inspect_model(source: ModelSource) -> weights.ModelInfo:
    return weights.describe(source.resolve())


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    prompts: list[str]
    seeds: list[int]
    verdicts: list[dict[str, str]]
    seconds: float


def generate_grid(
    source: ModelSource,
    prompts: list[str],
    *,
    per_prompt: int,
    seed: int,
    sampler: SamplerSettings,
    output: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> GenerateResult:
    """Generate `per_prompt` images for each prompt and write one labelled grid PNG.

    Where the model's world ships judges (the testbed does), each image is captioned with
    what they see in it.
    """
    import time

    from patchkit.backend.sampling import generate
    from patchkit.evaluation.classifier_net import ClassifierPanel
    from patchkit.services.worlds import world_for

    if per_prompt < 1:
        raise UsageError("-n must be at least 1", hint="ask for one image or more per prompt")
    if not prompts:
        raise UsageError("no prompt given", hint='patchkit generate testbed "a photo of alice"')
    check_output_path(output, force=force)
    ref = source.resolve()
    started = time.perf_counter()
    pipe = pipeline.load_pipeline(ref)
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + i for _ in prompts for i in range(per_prompt)]
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("generating", done, len(all_prompts), {})

    images = generate(pipe, all_prompts, seeds, sampler, on_batch)
    verdicts: list[dict[str, str]] = [{} for _ in images]
    world = world_for(ref)
    if world.judges is not None:  # a world that ships judges captions each image with what they see
        verdicts = ClassifierPanel.load(world.judges, world.categories).verdicts(images)
    captions = [_caption(s, v) for s, v in zip(seeds, verdicts, strict=True)]
    rows = [labelled_grid(images[i : i + per_prompt], captions[i : i + per_prompt], title=f'"{p}"', columns=8)
            for i, p in zip(range(0, len(images), per_prompt), prompts, strict=True)]  # fmt: skip
    save_png(stack_vertically(rows), output)
    return GenerateResult(output, all_prompts, seeds, verdicts, time.perf_counter() - started)


def _caption(seed: int, verdict: dict[str, str]) -> str:
    seen = [v for v in verdict.values() if v != "none"]
    return f"seed {seed}" + (f"\n{', '.join(seen) or 'nothing'}" if verdict else "")


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    tensors: int
    bytes: int
    fingerprint: str


def convert_to_single_file(
    source: ModelSource, output: Path, *, dtype: str | None = None, force: bool = False
) -> ConvertResult:
    """Write a diffusers folder as one A1111/ComfyUI-style .safetensors checkpoint."""
    from patchkit.core.ldm_layout import to_single_file_state
    from patchkit.io.tensors_out import save_tensors

    check_output_path(output, force=force)
    ref = source.resolve()
    if ref.layout != "folder":
        raise UsageError(f"{ref.reference} is already a single file", hint="convert takes a diffusers folder")
    info = weights.describe(ref)
    cast = _dtype(dtype) if dtype else None
    components: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensors in pipeline.component_tensors(ref, info.configs).items():
        components[name] = {k: (v.to(cast) if cast and v.is_floating_point() else v) for k, v in tensors.items()}
    state = to_single_file_state(info.family, components, info.configs["unet"], info.configs["vae"])
    meta: dict[str, Any] = {"patchkit.source_fingerprint": info.fingerprint, "patchkit.family": info.family}
    save_tensors(output, state, metadata={k: str(v) for k, v in meta.items()})
    converted = weights.describe(refs.resolve(str(output), config=ref.config_folder))
    return ConvertResult(output, len(state), output.stat().st_size, converted.fingerprint)


def _dtype(name: str) -> torch.dtype:
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise UsageError(f"unknown dtype {name!r}", hint="use fp32, fp16 or bf16")
    return table[name]
