"""The `patchkit` command: one Typer app, one error boundary."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

# typer (>= 0.29, pyproject) vendors click; its UsageError is what a bad argument raises
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from patchkit import __version__
from patchkit.cli.console import Output
from patchkit.cli.conventions import apply_conventions
from patchkit.cli.help_text import reflow_tree
from patchkit.cli.text import one_line
from patchkit.errors import PatchkitError, UsageError, from_os_error

if TYPE_CHECKING:
    # TyperGroup.invoke takes the vendored Context
    from typer._click import Context


class PatchkitGroup(TyperGroup):
    """Turns every PatchkitError into one line, a hint and the error's exit code.

    Set PATCHKIT_DEBUG=1 to see the traceback instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reflow_tree(self)  # typer builds this group (and every command under it) before it parses a word
        apply_conventions(self)

    def invoke(self, ctx: Context) -> Any:
        debug = os.environ.get("PATCHKIT_DEBUG") == "1"
        # the words after `patchkit`, read before click hands them on: does the command want JSON?
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        as_json = "--json" in (words[: words.index("--")] if "--" in words else words)
        try:
            return super().invoke(ctx)
        except PatchkitError as error:
            if debug:
                raise
            self._refuse(ctx, error, as_json)
        except BrokenPipeError:  # `patchkit ... | head`: the reader has all it wanted. Not a refusal:
            raise  # click's main silences a closed pipe and exits 1, as cat and grep say nothing
        except OSError as error:  # disk full, read-only, EIO, names too long: a refusal, not a crash
            if debug:
                raise
            self._refuse(ctx, from_os_error(error), as_json)
        except ClickUsageError as error:  # a missing or malformed argument: typer's usage line, our style
            if debug or error.ctx is None:
                raise
            output = ctx.find_object(Output) or Output()
            output.err.print(escape(error.ctx.get_usage()), highlight=False, soft_wrap=True)
            hint = f"{error.ctx.command_path} --help shows every argument and option"
            if getattr(error, "option_name", None) == "--force":  # the flag 0.1.0 gave two meanings
                hint = "--force is gone: --overwrite replaces an output; apply --ignore-base uses another base"
            self._refuse(ctx, UsageError(error.format_message(), hint=hint), as_json)
        except KeyboardInterrupt:
            output = ctx.find_object(Output) or Output()
            output.err.print("[bold red]interrupted[/]: nothing was written")
            ctx.exit(130)

    @staticmethod
    def _refuse(ctx: Context, error: PatchkitError, as_json: bool) -> None:
        output = ctx.find_object(Output) or Output()
        # a script asked for JSON: the refusal is JSON on stdout too, as well as the line below, unless the
        # command already printed its result (a failed gate: the report carries the reasons)
        if as_json and not output.printed_json:
            output.json({"error": error.message, "hint": error.hint, "exit": error.exit_code})
        # the message may carry names from hostile files: shown as text, never as markup
        output.err.print(f"[bold red]error:[/] {one_line(error.message)}", highlight=False, soft_wrap=True)
        if error.hint:
            output.err.print(f"[dim]hint:[/] {one_line(error.hint)}", highlight=False, soft_wrap=True)
        ctx.exit(error.exit_code)


app = typer.Typer(
    name="patchkit",
    cls=PatchkitGroup,
    help=(
        "Forget-Me-Not concept patches for Stable Diffusion, as a release workflow.\n\n"
        "Models are named by a diffusers folder, a single-file .safetensors checkpoint (with --config), "
        "a cached Hub id, or 'testbed' for the tiny Stable Diffusion shipped with patchkit."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"patchkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Root options shared by every command."""
    ctx.obj = Output(quiet=quiet)


def _register() -> None:
    from patchkit.cli import (
        apply,
        attack,
        demo,
        export,
        forget,
        import_cmd,
        merge,
        models,
        registry,
        score,
        show,
        signing,
        stack,
        testbed,
    )

    models.register(app)
    forget.register(app)
    score.register(app)
    attack.register(app)
    show.register(app)
    signing.register(app)
    apply.register(app)
    merge.register(app)
    export.register(app)
    import_cmd.register(app)
    stack.register(app)
    registry.register(app)
    app.add_typer(testbed.app, name="testbed")
    demo.register(app)


_register()


def main() -> None:
    sys.exit(app(standalone_mode=True))
