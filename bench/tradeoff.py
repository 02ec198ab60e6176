"""The forgetting trade-off on the testbed: target M-Score against collateral, over the main knobs.

Run: .venv/bin/pip install matplotlib   # the bench extra: pip install -e '.[bench]'
     .venv/bin/python bench/tradeoff.py [--concept circle] [--images 16] [-o docs/tradeoff.png]

For each setting the concept is forgotten alone (everything else at the defaults), and every
bench concept is scored with the patch loaded, against the base scored once in the same run.
x: the mean M-Score lost by the other concepts (collateral); y: the target's M-Score after.
The default sits where the target reaches the floor before collateral starts to grow.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from _testbed import TestbedBench

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

DEFAULTS = ForgetSettings()
SWEEP: dict[str, list[object]] = {
    "steps": [20, 40, 60, 90],
    "preserve_weight": [0.0, 0.3, 1.0, 3.0],
    "anchor_weight": [0.3, 1.0, 3.0],
    "learning_rate": [3e-3, 1e-2, 3e-2],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--category", default="object")
    parser.add_argument("--images", type=int, default=16, help="images per bench prompt")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/tradeoff.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = TestbedBench(args.images)
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    base = bench.scores(pipe, "base")
    points = []
    print(f"forget {args.concept}, {args.images} images per bench prompt; defaults {DEFAULTS}")
    print("| knob | value | target after | collateral (mean loss of the others) |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for knob, values in SWEEP.items():
            for value in values:
                settings = dataclasses.replace(DEFAULTS, **{knob: value})
                patch = Path(folder) / f"{knob}-{value}.safetensors"
                forget(
                    ForgetRequest(
                        ModelSource("testbed"), [Concept(args.concept, args.category)], patch, settings=settings
                    )
                )
                load_patch(pipe, patch, adapter_name="sweep")
                after = bench.scores(pipe, "patched")
                unload_patches(pipe)
                others = [n for n in base if n != args.concept]
                collateral = sum(base[n] - after[n] for n in others) / len(others)
                points.append((knob, value, after[args.concept], collateral))
                print(f"| {knob} | {value} | {after[args.concept]:.2f} | {collateral:+.3f} |", flush=True)

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for knob in SWEEP:
        mine = [p for p in points if p[0] == knob]
        axes.plot([p[3] for p in mine], [p[2] for p in mine], marker="o", label=knob)
        for _, value, target, collateral in mine:
            axes.annotate(f"{value:g}", (collateral, target), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.axhline(0.10, color="grey", linestyle=":", linewidth=1)
    axes.axvline(0.05, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("collateral: mean M-Score lost by the other 12 concepts")
    axes.set_ylabel(f"M-Score of '{args.concept}' after")
    axes.set_title(f"forget {args.concept} on the testbed: one knob at a time from the defaults")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
