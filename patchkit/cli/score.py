"""`patchkit score`: M-Scores over a ConceptBench, with an optional release gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import AllowPickleOpt, ConfigOpt, JsonOpt, ModelArg, OverwriteOpt
from patchkit.errors import GateFailedError, UsageError

if TYPE_CHECKING:
    from patchkit.evaluation.attack_report import AttackReport
    from patchkit.services.score import ScoreReport

score_service = LazyModule("patchkit.services.score")
models_service = LazyModule("patchkit.services.models")
attack_service = LazyModule("patchkit.services.attack")


def score(
    ctx: typer.Context,
    model: ModelArg,
    patch: Annotated[
        list[Path] | None, typer.Option("--patch", "-p", help="LoRA patch to load; repeat to stack.")
    ] = None,
    bench: Annotated[
        Path | None,
        typer.Option(help="ConceptBench JSON file (default: the model's own bench; only the testbed ships one)."),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="Concept the patches forget; repeat for several. Default: the concepts the patches' "
            "manifests say they forget or correct away.",
        ),
    ] = None,
    max_target: Annotated[float | None, typer.Option(help="Gate: fail if a target still scores above this.")] = None,
    max_collateral: Annotated[
        float | None, typer.Option(help="Gate: fail if a category's other concepts lose more than this on average.")
    ] = None,
    capacity: Annotated[
        bool, typer.Option(help="Also run the capacity probe: textual inversion on each concept's reference images.")
    ] = False,
    attack: Annotated[
        bool,
        typer.Option(
            "--attack",
            help="Then run attack/1 on each --target with the same patches (as `patchkit attack`); with -o its "
            "report goes to OUTPUT/attack/.",
        ),
    ] = False,
    max_asr: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="With --attack, gate: exit 6 if a target's worst-case ASR is above this."),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for report.json and one PNG per concept.")
    ] = None,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Measure how well a model still produces each bench concept (M-Score, docs/mscore.md).

    With --capacity, each concept is also probed by textual inversion on its reference
    images with the model under test: a patch that leaves capacity high has only hidden
    the concept behind its name.

    With --patch, the base and the patched model are scored side by side in one run, on
    the same seeds. The score of a concept is the fraction of its images that the bench's
    judge attributes to it, with a 95% Wilson interval.

    Release gate: with --max-target and/or --max-collateral (or a "gate" in the bench), the
    command exits 6 with a one-line reason when a target still scores too high or a
    category of retained concepts loses too much.

    Distributed: `accelerate launch --num_processes 2 -m patchkit score ...` splits the
    generation across processes (gloo on CPU) and gathers it; the scores equal a
    single-process run.

    Examples:

      patchkit score testbed -o report/

      patchkit score testbed --patch no-circle.safetensors --target circle --max-target 0.1 --max-collateral 0.1
    """
    output: Output = ctx.obj
    source = models_service.ModelSource(model, config, allow_pickle)
    if (attack or max_asr is not None) and not target:
        raise UsageError("--attack attacks the --target concepts: name at least one", hint="add --target CONCEPT")
    if max_asr is not None and not attack:
        raise UsageError("--max-asr gates the attack: add --attack", hint="patchkit score --help")
    with output.progress() as progress:

        def then_attack() -> AttackReport:
            request = attack_service.AttackRequest(concepts=tuple(target or ()), max_asr=max_asr)
            attacked: AttackReport = attack_service.attack(
                source, request, patches=patch or [], bench_path=bench, progress=progress
            )
            return attacked

        report = score_service.score(
            source,
            patches=patch or [],
            bench_path=bench,
            targets=target or [],
            max_target=max_target,
            max_collateral=max_collateral,
            capacity=capacity,
            output=output_dir,
            force=overwrite,
            progress=progress,
            # under accelerate every process runs the attack: its jobs are shared out between them
            then_attack=then_attack if attack else None,
        )
    if not score_service.is_main_process():  # under `accelerate launch`, one process speaks
        return

    def human() -> None:
        render_report(output, report)
        if report.attacks is not None:
            from patchkit.cli.attack import render_report as render_attacks

            render_attacks(output, report.attacks)
        if report.output:
            output.err.print(f"wrote {report.output}/report.json and {len(report.grids)} grids")

    output.result(report, human, json=json)
    reasons = report.gate_failures
    if reasons:
        raise GateFailedError("release gate failed: " + "; ".join(reasons), hint="the patch does not meet the bars")
    if report.gate is not None or max_asr is not None:
        output.say("[green]release gate passed[/]")


def render_report(output: Output, report: ScoreReport) -> None:
    """The before/after M-Score table and the collateral line, on stderr."""
    patched = bool(report.patches)
    table = Table(title=f"M-Score ({report.definition}) over bench {report.bench!r}")
    columns = ["concept", "category", "before", *(("after", "delta") if patched else ()), "95% CI"]
    if any(c.capacity_before is not None for c in report.concepts):
        columns += ["capacity before", *(("capacity after",) if patched else ())]
    for column in columns:
        table.add_column(column, justify="left" if column in ("concept", "category") else "right")
    for c in report.concepts:
        shown = c.after or c.before
        interval = f"{shown.interval.low:.2f}–{shown.interval.high:.2f}"
        name = f"[bold]{c.concept}[/] (target)" if c.target else c.concept
        cells = [name, c.category, f"{c.before.score:.3f}"]
        if patched and c.after is not None:
            cells += [f"{c.after.score:.3f}", f"{c.after.score - c.before.score:+.3f}"]
        cells.append(interval)
        for probe in (c.capacity_before, c.capacity_after):
            if probe is not None:
                cells.append(f"{probe.score:.3f}")
        table.add_row(*cells)
    output.table(table)
    if report.collateral:
        shown_collateral = ", ".join(f"{k} {v:+.3f}" for k, v in report.collateral.items())
        output.table(f"mean change of other concepts per category: {shown_collateral}")


def register(app: typer.Typer) -> None:
    app.command()(score)
