"""Rendering on in-memory consoles of fixed width, compared as exact strings (rich's own test style)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from patchkit.cli.console import Output
from patchkit.cli.merge import render_conflicts
from patchkit.errors import Conflict


def _output(width: int = 60, quiet: bool = False) -> tuple[Output, io.StringIO, io.StringIO]:
    err, out = io.StringIO(), io.StringIO()
    console = {"width": width, "color_system": None, "force_terminal": False, "legacy_windows": False}
    return Output(err=Console(file=err, **console), out=Console(file=out, **console), quiet=quiet), err, out


def test_messages_go_to_stderr_and_data_to_stdout():
    output, err, out = _output()
    output.say("wrote p.safetensors")
    output.json({"b": 1, "a": [1, 2]})
    assert err.getvalue() == "wrote p.safetensors\n"
    assert json.loads(out.getvalue()) == {"a": [1, 2], "b": 1}
    assert out.getvalue().index('"a"') < out.getvalue().index('"b"')  # sorted keys


def test_quiet_silences_messages_but_never_data():
    output, err, out = _output(quiet=True)
    output.say("hidden")
    output.json({"kept": True})
    assert err.getvalue() == ""
    assert json.loads(out.getvalue()) == {"kept": True}


def test_progress_is_silent_when_stderr_is_not_a_terminal():
    output, err, _ = _output()
    with output.progress() as progress:
        progress("forgetting", 1, 10, {"loss": 0.5})
    assert err.getvalue() == ""


def test_conflict_table_at_a_fixed_width():
    output, err, _ = _output(width=50)
    render_conflicts(output, [Conflict("base", True, "different bases"), Conflict("opposing-deltas", False, "x")])
    assert err.getvalue() == (
        "                   conflicts                    \n"
        "┏━━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓\n"
        "┃ kind            ┃ severity ┃ what            ┃\n"
        "┡━━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩\n"
        "│ base            │ error    │ different bases │\n"
        "│ opposing-deltas │ warning  │ x               │\n"
        "└─────────────────┴──────────┴─────────────────┘\n"
    )


def test_a_narrow_terminal_keeps_the_bar_the_steps_and_the_eta():
    from rich.progress import Progress

    from patchkit.cli.console import progress_columns

    metrics = "  ".join(f"loss_{i} 0.{i}234" for i in range(12))  # far wider than the terminal
    for width in (80, 60):
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, force_terminal=True, legacy_windows=False)
        bar = Progress(*progress_columns(), console=console, auto_refresh=False, expand=True)
        bar.add_task("forgetting", total=60, completed=7, metrics=metrics)
        console.print(bar.make_tasks_table(bar.tasks))
        line = buffer.getvalue().splitlines()[0]
        assert len(line) <= width and "forgetting" in line and "7/60" in line and "━" in line, line
        assert line.count(":") >= 2 or "-:--:--" in line  # elapsed and remaining both shown
