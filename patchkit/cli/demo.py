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
    n: Annotated[int, typer.Option("-n", help="Images per concept.")] = 8,
    json: JsonOpt = False,
) -> None:
    """Run patchkit's main job on the bundled testbed and show the result.

    Loads the testbed, generates each demo concept, has the judges read every image and
    writes a labelled grid; then forgets "circle" with the default settings and prints the
    before/after M-Score of every bench concept (the patch is written beside the grid).
    """
    from patchkit.services.demo import run_demo  # heavy (diffusers): only when the demo runs

    output: Output = ctx.obj
    with output.progress() as progress:
        result = run_demo(out, images_per_concept=n, progress=progress)
    if json:
        output.json({"fingerprint": result.fingerprint, "family": result.family, "grid": str(result.grid),
                     "concepts": [c.__dict__ for c in result.concepts], "seconds": result.seconds,
                     "patch": str(result.forgotten.output),
                     "mscores": {c.concept: {"before": c.before.score, "after": c.after.score if c.after else None}
                                 for c in result.forgotten.scores.concepts}})  # fmt: skip
        return
    table = Table(title=f"testbed ({result.family}, fingerprint {result.fingerprint[:12]}…)")
    for column in ("concept", "category", "prompt", "judged as concept"):
        table.add_column(column)
    for c in result.concepts:
        table.add_row(c.concept, c.category, c.prompt, f"{c.rate:.0%}")
    output.out.print(table)
    output.out.print(f"grid: {result.grid}")
    forgotten = result.forgotten
    table = Table(
        title=f"forget circle: M-Score before/after ({forgotten.scores.bench}, {forgotten.scores.definition})"
    )
    for column in ("concept", "category", "before", "after", "change"):
        table.add_column(column, justify="left" if column in ("concept", "category") else "right")
    for c in forgotten.scores.concepts:
        after = c.after.score if c.after else float("nan")
        name = f"[bold]{c.concept}[/] (forgotten)" if c.target else c.concept
        table.add_row(name, c.category, f"{c.before.score:.2f}", f"{after:.2f}", f"{after - c.before.score:+.2f}")
    output.out.print(table)
    output.out.print(
        f"patch: {forgotten.output} ({forgotten.bytes:,} bytes, trained in {forgotten.seconds:.1f} s); "
        f"inspect it with `patchkit show {forgotten.output}`   (demo {result.seconds:.0f} s)"
    )


def register(app: typer.Typer) -> None:
    app.command()(demo)
