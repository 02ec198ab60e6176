"""Which ConceptBench a command scores with: the file given, or the model's world's own.

Light on purpose (no diffusers): `forget --score` and `demo --bench` check the bench, and
that it names every target, before a minute of training is spent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from patchkit.core.conceptbench import Bench, parse_bench
from patchkit.core.world import World
from patchkit.errors import InputError, UsageError
from patchkit.io.regular import read_capped

MAX_BENCH_BYTES = 16 << 20  # a bench is prompts and names; megabytes of it is a mistake
_HINT = "check the --bench path (docs/mscore.md has the format)"


def load_bench(path: Path | None, world: World) -> tuple[Bench, Path]:
    """The bench at `path`, or else the world's own; a model outside every known world needs one."""
    bench_path = path or world.bench
    if bench_path is None:
        raise UsageError(
            "this model has no bench of its own: say what to score with --bench FILE",
            hint="write a ConceptBench file for your concepts (docs/mscore.md), then patchkit score MODEL --bench FILE",
        )
    data = read_capped(bench_path, MAX_BENCH_BYTES, hint=_HINT)
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{bench_path}: not UTF-8 text (byte {exc.start})", hint="save the bench as UTF-8 JSON"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{bench_path}: not valid JSON ({exc.msg} at line {exc.lineno})", hint="fix the JSON") from exc
    return parse_bench(parsed, str(bench_path)), bench_path.parent


def check_targets(bench: Bench, targets: Sequence[str], command: str) -> None:
    """Refuse a target the bench does not score: its M-Score could not be reported."""
    unknown = sorted(set(targets) - {c.name for c in bench.concepts})
    if unknown:
        raise UsageError(
            f"target {unknown[0]!r} is not a concept of bench {bench.name!r}",
            hint=f"add it to the bench, or give another with --bench; patchkit {command} --help says how",
        )
