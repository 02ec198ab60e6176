"""Choose the closed form's defaults on world A's tuning split, never on a bench that reports results.

Run: .venv/bin/python bench/closed_form_tuning.py [--images 4] [--concept C ...]
                                                  [--config preserve_weight=30,ridge=0.01,guidance=1 ...]

The tuning split (bench/_testbed.py, WorldBench.tuning) is world A's concepts in the
phrasings a forget trains with, on seeds from 500,000: the closed form encodes those very
prompts, so this split is where it is tuned, and the README's tables (world A's bench and
world B) are where it is measured. Each --config is one row per concept: the target's
M-Score after, the mean of the same category's other concepts and of the other
categories, and the worst single loss. Bars as bench/quality.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from _testbed import WorldBench

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.prompts import Concept
from patchkit.training.settings import ClosedFormSettings

# the sweep that chose the defaults (docs/closed-form.md, "How the defaults were chosen")
SWEEP = (
    "preserve_weight=1,ridge=0.01,guidance=0",
    "preserve_weight=1,ridge=0.01,guidance=1",
    "preserve_weight=1,ridge=0.1,guidance=1",
    "preserve_weight=3,ridge=0.01,guidance=1",
    "preserve_weight=30,ridge=0.01,guidance=1",
    "preserve_weight=300,ridge=0.01,guidance=1",
)


def settings_of(text: str) -> ClosedFormSettings:
    fields = {k: json.loads(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    return dataclasses.replace(ClosedFormSettings(), **fields)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per tuning prompt")
    parser.add_argument("--concept", action="append", default=None)
    parser.add_argument("--config", action="append", default=None, help="FIELD=VALUE,...; default: the sweep")
    args = parser.parse_args()
    bench = WorldBench.tuning(args.images)
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    before = bench.scores(pipe, "base")
    names = args.concept or list(bench.categories)
    print("| settings | target | after | same category | other categories | worst | bars |")
    print("|---|---|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for text in args.config or SWEEP:
            settings, met = settings_of(text), 0
            for name in names:
                category = bench.categories[name]
                patch = Path(folder) / f"{name}.safetensors"
                forget(ForgetRequest(ModelSource("testbed"), [Concept(name, category)], patch, method="closed-form",
                                     closed_form=settings, force=True))  # fmt: skip
                load_patch(pipe, patch, adapter_name="tuning")
                after = bench.scores(pipe, "patched")
                unload_patches(pipe)
                same = [n for n, c in bench.categories.items() if c == category and n != name]
                other = [n for n, c in bench.categories.items() if c != category]
                lost_same = mean([before[n] - after[n] for n in same]) if same else 0.0
                lost_other = mean([before[n] - after[n] for n in other])
                worst = max(same + other, key=lambda n: before[n] - after[n])
                ok = after[name] <= 0.10 and lost_same <= 0.10 and lost_other <= 0.05
                met += ok
                print(f"| {text} | {name} | {after[name]:.2f} | {-lost_same:+.2f} | {-lost_other:+.2f} "
                      f"| {worst} {after[worst] - before[worst]:+.2f} | {'met' if ok else '**missed**'} |",
                      flush=True)  # fmt: skip
            print(f"| {text} | **{met} of {len(names)} meet every bar** | | | | | |", flush=True)


if __name__ == "__main__":
    main()
