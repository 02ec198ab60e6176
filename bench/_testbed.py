"""Shared by the testbed quality benches: the testbed bench at a chosen size, its judges, and scoring."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from patchkit.core.conceptbench import Bench, parse_bench
from patchkit.evaluation.judges import load_judge
from patchkit.services.score import _score_all
from patchkit.services.worlds import judge_folders
from patchkit.testbed.paths import TESTBED_BENCH
from patchkit.training.settings import ForgetSettings


def settings_from(assignments: Sequence[str], base: ForgetSettings | None = None) -> ForgetSettings:
    """`base` (the defaults) with --set FIELD=VALUE assignments; values are JSON: 3, 1e-2, true."""
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in assignments)}
    return dataclasses.replace(base or ForgetSettings(), **overrides)


class TestbedBench:
    """Every testbed concept at `images` per bench prompt, judged by the shipped classifiers."""

    def __init__(self, images: int) -> None:
        data = json.loads(TESTBED_BENCH.read_text())
        data["concepts"] = [dict(c, images_per_prompt=images) for c in data["concepts"]]
        self.bench: Bench = parse_bench(data, f"testbed ({images} images per prompt)")
        folder = TESTBED_BENCH.parent
        self.judges = {
            c: load_judge(s, c, self.bench.names(c), base_dir=folder, named=judge_folders())
            for c, s in self.bench.judges.items()
        }
        self.categories = {c.name: c.category for c in self.bench.concepts}

    def scores(self, pipe: Any, label: str) -> dict[str, float]:
        """Each concept's M-Score with `pipe` as it is (patched or not)."""
        scored, _ = _score_all(pipe, self.bench, self.judges, label, None)
        return {name: result.score for name, result in scored.items()}
