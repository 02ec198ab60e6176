"""Choosing the defaults, on world A's tuning split only: target after against collateral, per setting.

Run: .venv/bin/pip install matplotlib   # the bench extra: pip install -e '.[bench]'
     .venv/bin/python bench/tradeoff.py [--images 4] [--concept C ...] [--only KNOB=VALUE ...] [-o docs/tradeoff.png]

Never tune on what you measure. Every setting here is scored on the tuning split of
world A (bench/_testbed.py: the testbed's concepts in its training phrasings, on seeds
from 500,000 up), never on the testbed's ConceptBench, whose prompts and seeds report the
README's quality table, and never on world B, which reports it again out of sample.

Each setting moves one knob from the defaults; every concept is forgotten alone with it
(gore as `--preset testbed-nsfw` trains it) and all concepts are scored with the patch
loaded. A setting is judged by how many concepts meet the bars on the split (target after
<= 0.10, same-category loss <= 0.10, other categories <= 0.05), then by mean collateral.
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
from patchkit.training.presets import preset_settings
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

DEFAULTS = ForgetSettings()
SWEEP: dict[str, list[object]] = {
    "negative_guidance": [2.0, 3.0],
    "preserve_weight": [1.0, 10.0],
    "steps": [90],
    "learning_rate": [2e-2],
}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate(settings: ForgetSettings, knob: str, bench: WorldBench, pipe: object, base: dict[str, float],
             concepts: list[str], folder: Path) -> tuple[int, float, float, list[str]]:  # fmt: skip
    """(concepts meeting the bars, mean target after, mean collateral, the misses) for one setting."""
    met, targets, collateral, missed = 0, [], [], []
    for name in concepts:
        category = bench.categories[name]
        mine = preset_settings("testbed-nsfw", settings, {knob}) if category == "nsfw" else settings
        patch = folder / f"{name}.safetensors"
        forget(ForgetRequest(ModelSource("testbed"), [Concept(name, category)], patch, settings=mine, force=True))
        load_patch(pipe, patch, adapter_name="sweep")
        after = bench.scores(pipe, "patched")
        unload_patches(pipe)
        same = [n for n, c in bench.categories.items() if c == category and n != name]
        other = [n for n, c in bench.categories.items() if c != category]
        same_loss = mean([base[n] - after[n] for n in same])
        other_loss = mean([base[n] - after[n] for n in other])
        ok = after[name] <= 0.10 and same_loss <= 0.10 and other_loss <= 0.05
        met += ok
        if not ok:
            missed.append(f"{name} ({after[name]:.2f}, same -{same_loss:.2f}, other -{other_loss:.2f})")
        targets.append(after[name])
        collateral.append(mean([base[n] - after[n] for n in same + other]))
    return met, mean(targets), mean(collateral), missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per tuning prompt")
    parser.add_argument("--concept", action="append", default=None, help="only these concepts (repeatable)")
    parser.add_argument("--defaults-only", action="store_true", help="score the defaults alone (a smoke run)")
    parser.add_argument("--only", action="append", default=None, metavar="KNOB=VALUE",
                        help="run these settings, not the sweep (repeatable; the defaults not re-run)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/tradeoff.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = WorldBench.tuning(args.images)
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    base = bench.scores(pipe, "base")
    concepts = args.concept or list(bench.categories)
    points = []
    print(f"world A tuning split, {args.images} images per prompt, {len(concepts)} concepts; defaults {DEFAULTS}")
    print(
        "| knob | value | concepts meeting the bars | mean target after | mean collateral | missed (target, losses) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    runs: list[tuple[str, object, ForgetSettings]] = [] if args.only else [("defaults", None, DEFAULTS)]
    for item in args.only or []:
        knob, value = item.split("=", 1)
        parsed = json.loads(value)
        runs.append((knob, parsed, dataclasses.replace(DEFAULTS, **{knob: parsed})))
    if not args.defaults_only and not args.only:
        runs += [
            (knob, v, dataclasses.replace(DEFAULTS, **{knob: v})) for knob, values in SWEEP.items() for v in values
        ]
    with tempfile.TemporaryDirectory() as folder:
        for knob, value, settings in runs:
            met, target, collateral, missed = evaluate(settings, knob, bench, pipe, base, concepts, Path(folder))
            points.append((knob, value, met, target, collateral))
            shown = "" if value is None else f"{value}"
            print(f"| {knob} | {shown} | {met} of {len(concepts)} | {target:.3f} | {collateral:+.3f} "
                  f"| {'; '.join(missed) or '—'} |", flush=True)  # fmt: skip

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for knob, value, met, target, collateral in points:
        label = "defaults" if value is None else f"{knob} {value}"
        axes.scatter([collateral], [target], s=30 + 12 * met)
        axes.annotate(f"{label} ({met}/{len(concepts)})", (collateral, target), textcoords="offset points",
                      xytext=(4, 4), fontsize=7)  # fmt: skip
    axes.set_xlabel("mean M-Score lost by the other concepts (collateral)")
    axes.set_ylabel("mean M-Score of the target after")
    axes.set_title("Choosing defaults on world A's tuning split only\n(never its bench, never world B)", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
