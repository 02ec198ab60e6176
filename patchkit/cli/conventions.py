"""What every command shares, fixed once on the whole command tree after typer builds it.

- `-q/--quiet` after the subcommand as well as before it (`patchkit forget ... -q`), as gh
  and hf take their global flags anywhere;
- flags show no value placeholder in --help (typer 0.29 prints `<bool>` for a flag that
  takes no value), and values are named as click names them (TEXT, PATH, INT, FLOAT).
"""

from __future__ import annotations

import copy
from typing import Any

from patchkit.cli.console import Output


def _set_quiet(ctx: Any, _param: Any, value: bool) -> bool:
    if value:
        output = ctx.find_object(Output)
        if output is not None:
            output.quiet = True
    return value


# click's own words for a value, shorter than typer's `<list[Path]>`: at 80 columns every
# character of the type column is taken from the help text beside it
_SHORT_TYPES = {"<str>": "TEXT", "<list[str]>": "TEXT", "<path>": "PATH", "<list[Path]>": "PATH",
                "<int>": "INT", "<float>": "FLOAT"}  # fmt: skip


def _shown_type(param: Any) -> str:
    try:
        return str(param.display_type(None))
    except Exception:  # a type typer can only show with a live context (choices): keep its own label
        return ""


def apply_conventions(command: Any, quiet: Any = None) -> None:
    """Give every command under the root `command` the root's -q/--quiet, and drop flags' placeholders.

    The option is the root's own parameter object, copied (typer vendors its own click, whose
    parameters only its own classes can be), made to set the run's Output instead of passing
    a value to the command."""
    params = getattr(command, "params", [])
    _quiet_help_placeholder(command)
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # typer shows the metavar in the type column; a flag has no value
        elif param.metavar is None and getattr(param, "param_type_name", "") == "option":
            param.metavar = _SHORT_TYPES.get(_shown_type(param), param.metavar)
    if quiet is None:
        root = next(p for p in params if "--quiet" in p.opts)
        quiet = copy.copy(root)
        quiet.expose_value, quiet.callback = False, _set_quiet
        quiet.help = "No progress bars or notes on stderr (before the command, too)."
    elif not {"-q", "--quiet"} & {opt for p in params for opt in (*p.opts, *getattr(p, "secondary_opts", []))}:
        params.append(quiet)
    for child in getattr(command, "commands", {}).values():
        apply_conventions(child, quiet)


def _quiet_help_placeholder(command: Any) -> None:
    """--help is made afresh at each call (click's get_help_option): drop its placeholder there."""
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
