"""`patchkit demo`: the README's one-command tour on the bundled testbed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.options import JsonOpt
from patchkit.services.demo import run_demo


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's pictures.")] = Path("demo-output"),
    n: Annotated[int, typer.Option("-n", help="Images per concept.")] = 8,
    json: JsonOpt = False,
) -> None:
    """Run patchkit's main job on the bundled testbed and show the result.

    Today: loads the testbed, generates each demo concept, has the judges read every image,
    and writes a labelled grid. Forgetting and before/after M-Scores join as they land.
    """
    output: Output = ctx.obj
    with output.progress() as progress:
        result = run_demo(out, images_per_concept=n, progress=progress)
    if json:
        output.json({"fingerprint": result.fingerprint, "family": result.family, "grid": str(result.grid),
                     "concepts": [c.__dict__ for c in result.concepts], "seconds": result.seconds})  # fmt: skip
        return
    table = Table(title=f"testbed ({result.family}, fingerprint {result.fingerprint[:12]}…)")
    for column in ("concept", "category", "prompt", "judged as concept"):
        table.add_column(column)
    for c in result.concepts:
        table.add_row(c.concept, c.category, c.prompt, f"{c.rate:.0%}")
    output.out.print(table)
    output.out.print(f"grid: {result.grid}   ({result.seconds:.1f} s)")
    output.out.print(f"[dim]{result.still_to_come}[/]")


def register(app: typer.Typer) -> None:
    app.command()(demo)
