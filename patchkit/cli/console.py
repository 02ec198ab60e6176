"""Consoles and progress: results (tables, JSON) on stdout; bars, notes and errors on stderr."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as ProgressBar
from rich.table import Column

from patchkit.core.jsonable import to_jsonable
from patchkit.core.progress import Progress


@dataclass
class Output:
    """What every command renders to: results (tables, JSON) on `out`, progress and messages on `err`.

    Tests render through consoles of fixed width (tests/cli/test_console.py)."""

    err: Console = field(default_factory=lambda: Console(stderr=True))
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    quiet: bool = False
    printed_json: bool = False  # one JSON document per run: a refusal after a result adds none

    def json(self, payload: Any) -> None:
        text = json.dumps(to_jsonable(payload), sort_keys=True, allow_nan=False)
        self.out.print_json(text, highlight=False)
        self.printed_json = True

    def result(self, data: Any, human: str | Callable[[], None], *, json: bool) -> None:
        """A command's one output call: `data` as JSON on stdout with --json, else the human rendering
        (a message, or a function that draws tables)."""
        if json:
            self.json(data)
        elif callable(human):
            human()
        else:
            self.say(human)

    def table(self, renderable: Any) -> None:
        """A command's human result (a table, a verdict) on stdout, as gh and hf print theirs, so that
        `patchkit registry list | grep circle` works; progress, notes and errors stay on stderr."""
        self.out.print(renderable)

    def say(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    @contextlib.contextmanager
    def progress(self) -> Iterator[Progress]:
        """A callback `(stage, done, total, metrics)` drawing one transient bar per stage.

        Silent under --quiet or when stderr is not a terminal, so logs stay clean.
        """
        if self.quiet or not self.err.is_terminal:
            yield lambda *_args: None
            return
        tasks: dict[str, Any] = {}
        with ProgressBar(*progress_columns(), console=self.err, transient=True, expand=True) as bar:

            def update(stage: str, done: int, total: int, metrics: dict[str, float]) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total, metrics="")
                shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                bar.update(tasks[stage], completed=done, total=total, metrics=shown)

            yield update


def progress_columns() -> tuple[ProgressColumn, ...]:
    """Stage, bar, steps, elapsed, ETA, then the metrics: on a narrow terminal the metrics are
    cut (they come last and may shrink to nothing), never the bar, the step count or the ETA."""
    return (
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=20),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        TimeRemainingColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
    )
