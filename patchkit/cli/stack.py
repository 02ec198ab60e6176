"""`patchkit stack`: an ordered, base-pinned, signable lock file of patches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.merge import render_conflicts
from patchkit.cli.options import ConfigOpt, JsonOpt, ModelArg, OverwriteOpt
from patchkit.cli.text import one_line
from patchkit.errors import ConflictError, TrustError

stack_service = LazyModule("patchkit.services.stack")
sources_service = LazyModule("patchkit.services.sources")

app = typer.Typer(
    help="Ordered, base-pinned lists of patches (*.stack.json) that apply reproduces exactly.", no_args_is_help=True
)
StackArg = Annotated[Path, typer.Argument(help="A *.stack.json file.", show_default=False)]


@app.command("new")
def new(
    ctx: typer.Context,
    base: ModelArg,
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Stack file to write (NAME.stack.json).")],
    config: ConfigOpt = None,
    description: Annotated[str | None, typer.Option(help="What this release stack is for.")] = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Start a stack pinned to BASE's fingerprint. Example: patchkit stack new testbed -o release.stack.json"""
    output: Output = ctx.obj
    stack = stack_service.new_stack(base, output_path, config=config, force=overwrite, description=description)
    message = f"wrote {one_line(str(stack.path))}, pinned to base {stack.data['base']['fingerprint']}"
    output.result({"stack": stack.path, **stack.data}, message, json=json)


@app.command("add")
def add(
    ctx: typer.Context,
    stack: StackArg,
    patch: Annotated[str, typer.Argument(help="Patch file or registry NAME@VERSION to append.", show_default=False)],
    scale: Annotated[float, typer.Option(help="Scale of this patch's delta.")] = 1.0,
    base: Annotated[str | None, typer.Option(help="Where the base is, if not where the stack says.")] = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Append a patch, after checking its base and its concepts against the stack's.

    The expected output fingerprint is recomputed (the patches are fused in memory, nothing
    is written), so `apply BASE STACK` can prove it produced exactly what was reviewed.

    Example: patchkit stack add release.stack.json no-circle.safetensors --scale 0.8
    """
    output: Output = ctx.obj
    try:
        with output.progress() as progress:
            updated = stack_service.add_patch(
                stack,
                patch,
                scale=scale,
                base=base,
                config=config,
                progress=progress,
                warn=lambda m: output.say(f"[yellow]warning:[/] {one_line(m)}"),
            )
    except ConflictError as error:
        render_conflicts(output, error.conflicts)
        raise
    message = (f"{one_line(str(stack))}: {len(updated.data['patches'])} patches; apply will give "
               f"{updated.data['expected_output_fingerprint']}")  # fmt: skip
    output.result({"stack": stack, **updated.data}, message, json=json)


@app.command("show")
def show(ctx: typer.Context, stack: StackArg, json: JsonOpt = False) -> None:
    """Print a stack: its base, its patches in order, the output it must produce."""
    output: Output = ctx.obj
    data = sources_service.read_stack(stack).data

    def human() -> None:
        pinned = f"{stack} (base {data['base']['reference']}, {data['base']['fingerprint'][:16]}…)"
        table = Table(title=one_line(pinned))
        for column in ("#", "patch", "id", "scale", "source"):
            table.add_column(column, overflow="fold")
        for i, p in enumerate(data["patches"], 1):
            row = (str(i), f"{p['name']}@{p['version']}", p["patch_id"][:19] + "…", f"{p['scale']:g}", p["source"])
            table.add_row(*(one_line(cell) for cell in row))  # a stack file is text anyone can edit
        output.table(table)
        output.out.print(f"expected output fingerprint: {data['expected_output_fingerprint']}", highlight=False)

    output.result(data, human, json=json)


@app.command("verify")
def verify(
    ctx: typer.Context,
    stack: StackArg,
    base: ModelArg,
    config: ConfigOpt = None,
    require_signed: Annotated[
        bool, typer.Option("--require-signed", help="Every patch and the stack itself must carry a trusted signature.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Check everything: BASE's fingerprint, every patch's id and signature, the stack's signature, the output.

    Exit 0 only when every check holds; 7 otherwise. Example: patchkit stack verify release.stack.json sd15/
    """
    output: Output = ctx.obj
    with output.progress() as progress:
        result = stack_service.verify_stack(stack, base, config=config, require_signed=require_signed,
                                            progress=progress)  # fmt: skip

    def human() -> None:
        table = Table(title=f"stack verify {stack}")
        for column in ("check", "result", "detail"):
            table.add_column(column, overflow="fold")
        for c in result.checks:  # names and details come from the stack and patch files: text, never markup
            table.add_row(one_line(c.subject), "[green]ok[/]" if c.ok else "[red]failed[/]", one_line(str(c.detail)))
        output.table(table)
        for message in result.warnings:
            output.err.print(f"[yellow]warning:[/] {one_line(message)}")

    output.result(result, human, json=json)
    if not result.ok:
        failed = next(c for c in result.checks if not c.ok)
        raise TrustError(f"{stack}: {failed.subject}: {failed.detail}", hint="see the table above for every check")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="stack")
