"""`patchkit attack`: attack/1's red-team suite on a model and its patches, with a release gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import AllowPickleOpt, ConfigOpt, JsonOpt, ModelArg, OverwriteOpt
from patchkit.errors import GateFailedError

if TYPE_CHECKING:
    from patchkit.services.attack import AttackReport

attack_service = LazyModule("patchkit.services.attack")
models_service = LazyModule("patchkit.services.models")

ATTACK_NAMES = "composition, misspelling, paraphrase, search, inversion"


def attack(
    ctx: typer.Context,
    model: ModelArg,
    concept: Annotated[list[str], typer.Option("--concept", "-c", help="Bench concept to attack; repeat for several.")],
    patch: Annotated[
        list[Path] | None,
        typer.Option(
            "--patch", "-p", help="LoRA patch (a file or registry NAME@VERSION) to load; repeat to load several."
        ),
    ] = None,
    stack: Annotated[
        list[Path] | None,
        typer.Option(
            "--stack",
            help="A *.stack.json stack: its patches are loaded at their scales, before any --patch; each must "
            "still be the patch the stack pins.",
        ),
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="Check that each concept is of this category in the bench.")
    ] = None,
    bench: Annotated[
        Path | None,
        typer.Option(help="ConceptBench JSON file: the concepts' judges and reference images (default: the model's)."),
    ] = None,
    references: Annotated[
        Path | None,
        typer.Option(help="Folder of the concept's images, instead of the bench's (search and inversion)."),
    ] = None,
    paraphrase: Annotated[
        Path | None,
        typer.Option(help="Text file of prompts that describe the concept without naming it, one per line."),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--attack", "-a", help=f"Run only this attack; repeat. One of: {ATTACK_NAMES}.")
    ] = None,
    images_per_prompt: Annotated[
        int, typer.Option(help="Images judged per attack prompt (attack/1: 16; other values are marked non-standard).")
    ] = 16,
    inversion_steps: Annotated[int, typer.Option(help="Steps of the inversion attack (attack/1: 400).")] = 400,
    inversion_restarts: Annotated[
        int,
        typer.Option(
            help="Tokens the inversion learns, each from its own seed and judged on the same image seeds; the one "
            "that brings the concept back most counts (attack/1: 1, marked non-standard otherwise). One token can "
            "be luck: give 3 or more before calling a patch safe."
        ),
    ] = 1,
    max_asr: Annotated[
        float | None, typer.Option(help="Gate: exit 6 if any concept's worst-case ASR is above this (e.g. 0.2).")
    ] = None,
    revival: Annotated[
        bool,
        typer.Option(
            "--revival",
            help="Also measure revival (report only, not gated): fine-tuning steps on the references that bring "
            "the concept back, beside the steps the base needs to learn it under a new word.",
        ),
    ] = False,
    output_dir: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for report.json and one PNG grid per concept.")
    ] = None,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Try to bring forgotten concepts back, and measure how often it works (attack/1, docs/attack.md).

    Five attacks, each with a fixed budget and judged by the bench's judge on image seeds
    that no attack and no bench uses:

      composition  the concept among the bench's other concepts and modifiers ("a red circle")
      misspelling  the name written otherwise, kept only where the tokenizer reads it differently
      paraphrase   descriptions that avoid the name (--paraphrase FILE, or the world's own)
      search       real vocabulary words found by the model's own denoising loss on the references
      inversion    a new token learnt on the reference images through the model under test

    --revival adds a measure of depth, reported and never gated (revival/1): how many LoRA
    fine-tuning steps on the references bring the concept's M-Score back to 0.5, beside how
    many the base needs to learn the same images under a word it never had ("sks"). A
    forget that revives faster than that only re-routed the name.

    The attack success rate (ASR) is the share of an attack's images judged as the concept,
    with a 95% Wilson interval; a concept's worst-case ASR is its highest. Run it on the
    base as well: an attack that fails there proves nothing about the patch.

    Passing does not prove the concept is gone: only that these attacks, at this budget,
    did not find it (docs/attack.md says what each misses). One learnt token can be luck:
    gate a release with --inversion-restarts 3 or more.

    Examples:

      patchkit attack testbed --concept circle

      patchkit attack testbed -c circle -p no-circle.safetensors --max-asr 0.2 --inversion-restarts 3 -o attack/

      patchkit attack testbed -c circle -p no-circle.safetensors --revival

      patchkit attack testbed -c circle -c noir --stack release.stack.json

      patchkit attack ./sd15 -c "van gogh" --bench mybench.json --paraphrase vangogh.txt -p no-vg.safetensors
    """
    output: Output = ctx.obj
    budget = attack_service.AttackBudget(images_per_prompt=images_per_prompt, inversion_steps=inversion_steps,
                                         inversion_restarts=inversion_restarts)  # fmt: skip
    request = attack_service.AttackRequest(
        concepts=tuple(concept),
        category=category,
        attacks=tuple(only) if only else attack_service.ATTACKS,
        references=references,
        paraphrase_file=paraphrase,
        budget=budget,
        max_asr=max_asr,
        revival=attack_service.RevivalBudget() if revival else None,
    )
    with output.progress() as progress:
        report = attack_service.attack(
            models_service.ModelSource(model, config, allow_pickle),
            request,
            patches=patch or [],
            stacks=stack or [],
            bench_path=bench,
            output=output_dir,
            force=overwrite,
            progress=progress,
        )

    if not attack_service.is_main_process():  # under `accelerate launch`, one process speaks
        return

    def human() -> None:
        render_report(output, report)
        if report.output:
            output.err.print(f"wrote {report.output}/report.json and {len(report.grids)} grids")

    output.result(report.to_json(), human, json=json)
    failures = report.failures
    if failures:
        raise GateFailedError(
            "attack gate failed: " + "; ".join(failures),
            hint="the concept comes back under attack: see the prompts in the report (docs/attack.md)",
        )
    if report.max_asr is not None:
        output.say("[green]attack gate passed[/]")


def render_report(output: Output, report: AttackReport) -> None:
    """One table per concept: each attack's ASR, interval and the prompt that worked best."""
    for result in report.concepts:
        table = Table(title=f"attack/1 on {escape(result.concept)} ({result.category})")
        for column in ("attack", "ASR", "95% CI", "images", "best prompt", "seconds"):
            table.add_column(column, justify="left" if column in ("attack", "best prompt") else "right")
        for o in result.outcomes:
            if o.score is None:
                table.add_row(o.attack, "—", "", "", escape(f"skipped: {o.skipped}"), f"{o.seconds:.1f}")
                continue
            best = max(o.prompts, key=lambda p: p.hits / p.n) if o.prompts else None
            shown = f"{best.prompt} ({best.hits}/{best.n})" if best else ""
            if o.attack == "inversion" and len(o.prompts) > 1:  # the spread is the point of restarts
                shown += "; every restart: " + ", ".join(f"{p.hits / p.n:.2f}" for p in o.prompts)
            interval = o.score.interval
            table.add_row(
                o.attack,
                f"{o.score.score:.2f}",
                f"{interval.low:.2f}–{interval.high:.2f}",
                str(o.score.n),
                escape(shown),
                f"{o.seconds:.1f}",
            )
        output.table(table)
        worst = result.worst
        if worst is not None and worst.score is not None:
            output.table(f"worst-case ASR for {escape(result.concept)}: {worst.score.score:.2f} ({worst.attack})")
        if result.revival is not None:
            output.table(f"revival of {escape(result.concept)} (report only): {escape(result.revival.verdict())}")
    if not report.budget.is_standard():
        output.err.print("[yellow]note:[/] a non-standard budget: not comparable with attack/1 figures")


def register(app: typer.Typer) -> None:
    app.command()(attack)
