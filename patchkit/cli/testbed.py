"""`patchkit testbed`: build, check and inspect the bundled tiny Stable Diffusion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import JsonOpt, OverwriteOpt

fixtures = LazyModule("patchkit.services.fixtures")
testbed = LazyModule("patchkit.services.testbed")

app = typer.Typer(
    help="The tiny Stable Diffusion shipped with patchkit: a synthetic world of IDs, objects, styles "
    "and a stand-in unsafe concept, with judges that know the ground truth.",
    no_args_is_help=True,
)


@app.command()
def build(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create.")],
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and training.")] = 0,
    quick: Annotated[bool, typer.Option(help="Smoke build in seconds: every stage runs, nothing is learnt.")] = False,
    world: Annotated[
        str, typer.Option(help="testbed (world A, the shipped testbed) or validation (world B, never tuned on).")
    ] = "testbed",
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Train the testbed (or the validation world) from scratch on CPU: judges, VAE, then text encoder and UNet.

    The full testbed build took about 50 minutes on 2 CPU cores; the validation world's
    took 106 minutes while other work shared the cores. The shipped ones were made by
    `patchkit testbed build --out DIR --seed 0` and `... --world validation` (see each
    build_report.json).
    """
    output: Output = ctx.obj
    with output.progress() as progress:
        report = testbed.build(out, seed=seed, quick=quick, force=overwrite, progress=progress, world_name=world)
    output.result(report, f"built {out} in {report['seconds']['total']:.0f} s", json=json)


@app.command()
def check(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="The world's model or one derived from it (default: the shipped one).")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Images per concept.")] = 32,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    world: Annotated[str, typer.Option(help="testbed (world A) or validation (world B).")] = "testbed",
    json: JsonOpt = False,
) -> None:
    """Measure the testbed's (or the validation world's) quality bars and exit 1 if any is missed.

    Bars: each judge >= 98% accurate on fresh ground-truth images; each concept's prompts
    produce that concept >= 80% of the time at the default sampler settings.
    """
    output: Output = ctx.obj
    with output.progress() as progress:
        result = testbed.check(model, images_per_concept=n, seed=seed, progress=progress, world_name=world)

    def human() -> None:
        judges = Table(title="judges on fresh ground truth")
        judges.add_column("category")
        judges.add_column("accuracy", justify="right")
        for category, accuracy in result.judge_accuracy.items():
            judges.add_row(category, _mark(accuracy, testbed.JUDGE_BAR))
        output.table(judges)
        sampler = result.sampler
        rates = Table(title=f"generation ({n} images per concept, {sampler.steps} steps, guidance {sampler.guidance})")
        for column in ("concept", "category", "judged as concept"):
            rates.add_column(column)
        for rate in result.generation:
            rates.add_row(rate.concept, rate.category, _mark(rate.rate, testbed.GENERATION_BAR))
        output.table(rates)
        output.table(
            "[bold green]all bars met[/]" if result.passed else f"[bold red]missed:[/] {'; '.join(result.failures())}"
        )

    output.result(result, human, json=json)
    if not result.passed:
        raise typer.Exit(1)


def _mark(value: float, bar: float) -> str:
    colour = "green" if value >= bar else "red"
    return f"[{colour}]{value:.3f}[/]"


def _architectures() -> list[str]:
    """The architectures whose published configs patchkit ships (what `fixture` can build)."""
    from patchkit.models.refs import ARCHITECTURES

    return sorted(p.name for p in ARCHITECTURES.iterdir() if (p / "model_index.json").is_file())


@app.command()
def fixture(
    ctx: typer.Context,
    architecture: Annotated[str, typer.Argument(help="sd15, sd21 or sdxl.", autocompletion=_architectures)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Diffusers folder to create.")],
    single_file: Annotated[Path | None, typer.Option(help="Also write this single-file checkpoint.")] = None,
    tiny: Annotated[bool, typer.Option(help="Same blocks and conditioning at test-sized widths.")] = False,
    dtype: Annotated[str, typer.Option(help="fp32 or fp16.")] = "fp32",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build a random-weight SD 1.5, SD 2.1 or SDXL model from its published config, offline.

    For tests and benchmarks: nothing is downloaded. Full size SD 1.5 is about 4 GB in fp32.

    Example:

      patchkit testbed fixture sd15 --tiny -o sd15-tiny --single-file sd15-tiny.safetensors
    """
    output: Output = ctx.obj
    result = fixtures.build_random_model(
        architecture,
        out,
        tiny=tiny,
        dtype=dtype,
        single_file=single_file,
        seed=seed,
        force=overwrite,
        progress=output.say,
    )
    output.say(f"wrote {result.folder} ({result.family}, {result.parameters:,} parameters, {result.dtype})")
