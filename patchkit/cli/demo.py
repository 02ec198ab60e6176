"""`patchkit demo`: the README's one-command tour on the bundled testbed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.options import JsonOpt


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's pictures.")] = Path("demo-output"),
    n: Annotated[int, typer.Option("-n", min=1, help="Images per concept in the grid.")] = 8,
    bench: Annotated[
        Path | None,
        typer.Option(
            "--bench",
            help="ConceptBench JSON the forget is scored on (default: the testbed's own, 416 images a side). "
            "It must name circle.",
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Run patchkit's main job on the bundled testbed and show the result.

    Loads the testbed, generates each demo concept, has the judges read every image and
    writes a labelled grid; then forgets "circle" with the default settings, prints the
    before/after M-Score of every bench concept, applies the patch to a copy of the testbed
    (the patch and the patched model are written beside the grid) and lists the example
    registry's reference patches.

    The before/after scoring is most of the demo's time; --bench with fewer concepts or
    images per prompt makes a quicker tour (its scores are then noisier).

    Examples:

      patchkit demo

      patchkit demo -o /tmp/tour -n 4 --bench my-small-bench.json
    """
    from patchkit.services.demo import run_demo  # heavy (diffusers): only when the demo runs

    output: Output = ctx.obj
    with output.progress() as progress:
        result = run_demo(out, images_per_concept=n, bench=bench, progress=progress)

    def human() -> None:  # the tour's tables go to stdout: they are what the demo shows
        table = Table(title=f"testbed ({result.family}, fingerprint {result.fingerprint[:12]}…)")
        for column in ("concept", "category", "prompt", "judged as concept"):
            table.add_column(column)
        for c in result.concepts:
            table.add_row(c.concept, c.category, c.prompt, f"{c.rate:.0%}")
        output.out.print(table)
        output.out.print(f"grid: {result.grid}")
        forgotten, scores = result.forgotten, result.scores
        table = Table(title=f"forget circle: M-Score before/after ({scores.bench}, {scores.definition})")
        for column in ("concept", "category", "before", "after", "change"):
            table.add_column(column, justify="left" if column in ("concept", "category") else "right")
        for score in scores.concepts:
            after = score.after.score if score.after else float("nan")
            name = f"[bold]{score.concept}[/] (forgotten)" if score.target else score.concept
            before = score.before.score
            table.add_row(name, score.category, f"{before:.2f}", f"{after:.2f}", f"{after - before:+.2f}")
        output.out.print(table)
        output.out.print(
            f"patch: {forgotten.output} ({forgotten.bytes:,} bytes, trained in {forgotten.seconds:.1f} s); "
            f"inspect it with `patchkit show {forgotten.output}`"
        )
        applied = result.applied
        output.out.print(
            f"applied: {applied.output} ({applied.touched} tensors changed, {applied.seconds:.2f} s), fingerprint "
            f"{applied.base_fingerprint[:12]}… -> {applied.output_fingerprint[:12]}…; undo with `patchkit revert "
            f"{applied.output} --revert-data {result.revert_data} -o DIR` (the revert file is "
            "private: the released copy holds nothing that restores the circle)"
        )
        if result.examples:
            table = Table(title="the example registry (registry/): patchkit's signed reference patches")
            for column in ("patch", "forgets", "category", "M-Score after"):
                table.add_column(column)
            for entry in result.examples:
                for c in entry["concepts"]:
                    shown = f"{c['after']:.2f}" if "after" in c else "–"
                    table.add_row(f"{entry['name']}@{entry['version']}", c["name"], c["category"], shown)
            output.out.print(table)
        output.out.print(f"(demo {result.seconds:.0f} s)")

    output.result(result, human, json=json)


def register(app: typer.Typer) -> None:
    app.command()(demo)
