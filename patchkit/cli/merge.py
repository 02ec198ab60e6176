"""`patchkit merge`: several patches into one, with a conflict report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import ConfigOpt, JsonOpt, KohyaOpt, OverwriteOpt
from patchkit.cli.text import one_line
from patchkit.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from patchkit.errors import Conflict

merge_service = LazyModule("patchkit.services.merge")
registry_service = LazyModule("patchkit.services.registry")


def render_conflicts(output: Output, conflicts: list[Conflict]) -> None:
    table = Table(title="conflicts")
    table.add_column("kind")
    table.add_column("severity")
    table.add_column("what", overflow="fold")
    for c in conflicts:
        table.add_row(c.kind, "[red]error[/]" if c.fatal else "[yellow]warning[/]", one_line(c.message))
    output.err.print(table)


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError as exc:
        raise UsageError(
            f"--weights {text!r} is not a comma-separated list of numbers", hint="--weights 1,0.5"
        ) from exc


def merge(
    ctx: typer.Context,
    patches: Annotated[
        list[Path], typer.Argument(help="Two or more patch files or registry NAME@VERSION refs.", show_default=False)
    ],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Merged patch to write (.safetensors).")],
    method: Annotated[
        str,
        typer.Option(
            help="concat (exact, ranks add), svd (re-factored to --rank) or fuse (re-fitted jointly; --base)."
        ),
    ] = "concat",
    rank: Annotated[int | None, typer.Option(help="Rank of the svd merge.")] = None,
    weights: Annotated[str | None, typer.Option(help="One weight per patch, comma-separated: 1,0.5,2.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Treat opposing-delta warnings as errors.")] = False,
    name: Annotated[str | None, typer.Option(help="Name of the merged patch.")] = None,
    version: Annotated[str, typer.Option(help="Version of the merged patch.")] = "1.0.0",
    base: Annotated[
        str | None, typer.Option("--base", help="fuse: the base model the patches were made for.", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    kohya: KohyaOpt = True,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Merge patches into one patch for the same base.

    [bold]concat[/] is exact: the merged delta is the weighted sum of the inputs' deltas.
    [bold]svd[/] re-factors it to rank R and reports the relative Frobenius error.
    [bold]fuse[/] (--base MODEL) re-fits the patches jointly on the base's text states, so that
    each keeps its own edit of its own target in the others' company: a plain sum lets one
    patch's delta undo another's forget. It reports each parent's drift (how far the company
    moves its edit of its own training prompts) stacked and fused. Cross-attention patches
    that record their training prompts only (every patchkit forget and correct); rank adds,
    as in concat. docs/merge.md has the maths and the measured effect.

    Refused before anything is written: patches for different bases, a concept forgotten by
    one patch and corrected by another, one concept corrected to two targets. Modules two
    patches push in opposite directions (cosine < -0.5) are a warning, an error with --strict.
    The merged manifest lists its parents and carries their M-Scores, marked as inherited
    until `patchkit score` runs on the merged patch.

    Examples:

      patchkit merge no-circle.safetensors no-noir.safetensors -o no-circle-noir.safetensors

      patchkit merge a.safetensors b.safetensors c.safetensors --method svd --rank 16 -o abc.safetensors

      patchkit merge no-circle.safetensors no-noir.safetensors --method fuse --base testbed -o safe.safetensors
    """
    output: Output = ctx.obj
    paths = [registry_service.patch_path(str(p)) for p in patches]
    try:
        with output.progress() as progress:
            result = merge_service.merge(
                paths, output_path, method=method, rank=rank, weights=_weights(weights), strict=strict, name=name,
                version=version, force=overwrite, base=base, config=config, progress=progress, kohya=kohya,
            )  # fmt: skip
    except ConflictError as error:
        render_conflicts(output, error.conflicts)
        raise

    def human() -> None:
        if result.warnings:
            render_conflicts(output, result.warnings)
        if result.method == "svd":
            worst = sorted(result.module_errors.items(), key=lambda kv: -kv[1])[:5]
            table = Table(title=f"svd to rank {result.rank}: relative Frobenius error (worst modules)")
            table.add_column("module", overflow="fold")
            table.add_column("error", justify="right")
            for module, relative in worst:
                table.add_row(module, f"{relative:.2%}")
            table.add_row("[bold]overall", f"[bold]{result.overall_error:.2%}")
            output.table(table)
        if result.drifts:
            table = Table(title="drift of each patch's edit of its own target (0 = untouched by the others)")
            for column in ("patch", "stacked", "fused"):
                table.add_column(column, justify="left" if column == "patch" else "right")
            for d in result.drifts:
                table.add_row(one_line(d.patch), f"{d.stacked:.1%}", f"{d.fused:.1%}")
            output.table(table)
        inherited = "; M-Scores copied from the parents: run patchkit score on it" if result.manifest.get(
            "scores_inherited") else ""  # fmt: skip
        output.say(
            f"wrote {one_line(str(result.output))}: {len(result.manifest['parents'])} parents, rank {result.rank}, "
            f"{result.bytes:,} bytes in {result.seconds:.2f} s{inherited}"
        )
        if result.kohya is not None:
            output.say(f"wrote {one_line(str(result.kohya))}: the same patch in the kohya layout (A1111, ComfyUI)")

    output.result(result, human, json=json)


def register(app: typer.Typer) -> None:
    app.command()(merge)
