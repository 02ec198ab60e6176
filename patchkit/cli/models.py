"""Commands on whole models: info, generate, convert."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import AllowPickleOpt, ConfigOpt, JsonOpt, ModelArg, OverwriteOpt

models = LazyModule("patchkit.services.models")
sampling = LazyModule("patchkit.backend.sampling")


def info(
    ctx: typer.Context,
    model: ModelArg,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    json: JsonOpt = False,
) -> None:
    """Describe a model: SD family, dtype, layout and its base fingerprint.

    The fingerprint is a SHA-256 over the UNet and text encoder weights (docs/fingerprint.md);
    it is the same for a diffusers folder and a single-file checkpoint of the same weights,
    and it is what patches record as the base they were made for.

    Examples:

      patchkit info testbed

      patchkit info model.safetensors --config ./sd15-folder
    """
    output: Output = ctx.obj
    summary = models.inspect_model(models.ModelSource(model, config, allow_pickle)).summary()

    def human() -> None:
        table = Table(show_header=False, box=None)
        for key, value in summary.items():
            table.add_row(f"[bold]{key}", str(value))
        output.table(table)
        output.out.print(summary["fingerprint"], highlight=False)

    output.result(summary, human, json=json)


def generate(
    ctx: typer.Context,
    model: ModelArg,
    prompts: Annotated[
        list[str], typer.Argument(help="One or more prompts; each gets its own row.", show_default=False)
    ],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("grid.png"),
    n: Annotated[int, typer.Option("-n", help="Images per prompt.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the first image; image i uses seed+i.")] = 0,
    steps: Annotated[int, typer.Option(help="Sampler steps.")] = 25,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 5.0,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Generate images and write a labelled grid PNG, one row per prompt.

    On the testbed every image is captioned with what the testbed's judges see in it,
    so you can read at a glance whether a concept is still produced.

    Example:

      patchkit generate testbed "a photo of alice" "a ring in the style of neon" -n 8 -o grid.png
    """
    output: Output = ctx.obj
    sampler = sampling.SamplerSettings(steps=steps, guidance=guidance)
    with output.progress() as progress:
        result = models.generate_grid(
            models.ModelSource(model, config, allow_pickle),
            prompts,
            per_prompt=n,
            seed=seed,
            sampler=sampler,
            output=output_path,
            force=overwrite,
            progress=progress,
        )
    output.result(result, f"wrote {result.output} ({len(result.seeds)} images in {result.seconds:.1f} s)", json=json)


def convert(
    ctx: typer.Context,
    model: ModelArg,
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Single-file .safetensors to write.")],
    dtype: Annotated[str | None, typer.Option(help="Cast floating weights: fp32, fp16 or bf16.")] = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Write a diffusers folder as one single-file checkpoint (the A1111 / ComfyUI layout).

    The result loads with diffusers' from_single_file (given the folder as config) and keeps
    the base fingerprint when the dtype is unchanged.

    Example:

      patchkit convert ./my-sd15 -o my-sd15.safetensors
    """
    output: Output = ctx.obj
    result = models.convert_to_single_file(models.ModelSource(model), output_path, dtype=dtype, force=overwrite)

    def human() -> None:
        output.say(f"wrote {result.output}: {result.tensors} tensors, {result.bytes:,} bytes")
        output.out.print(result.fingerprint, highlight=False)

    output.result(result, human, json=json)


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(generate)
    app.command()(convert)
