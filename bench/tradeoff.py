"""Choosing the defaults, on world A's tuning split only: target after against collateral, per setting.

Run: .venv/bin/pip install matplotlib   # the bench extra: pip install -e '.[bench]'
     .venv/bin/python bench/tradeoff.py [--images 4] [--concept C ...] [--only KNOB=VALUE ...] [-o docs/tradeoff.png]

Never tune on what you measure. Every setting here is scored on the tuning split of
world A (patchkit/testbed/tuning.py), never on the testbed's ConceptBench, whose prompts
and seeds report the README's quality table, and never on world B, which reports it again
out of sample. The split has two halves, on seeds from 500,000 up:
- trained phrasings (what a testbed forget trains and preserves with): collateral;
- transfer phrasings (nothing trains, benches or attacks with them): whether forgetting
  carries to words the patch never saw.

Each setting moves one knob from the defaults (or, with --only A=1,B=2, several); every
concept is forgotten alone with it (gore as `--preset testbed-nsfw` trains it) and all
concepts are scored with the patch loaded, on both halves. A concept meets the bars when,
on each half, its target after is <= 0.10, its same-category neighbours lose <= 0.10 and
the other categories <= 0.05. A setting is judged by how many concepts meet them; ties go
to the lower mean target after on the transfer half (forgetting that carries to new words
is what "safe" needs first), then to less mean collateral.
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


@dataclasses.dataclass
class Outcome:
    met: int = 0  # concepts meeting the bars on both halves
    met_trained: int = 0
    met_transfer: int = 0
    targets: list[float] = dataclasses.field(default_factory=list)  # after, on the transfer half
    collateral: list[float] = dataclasses.field(default_factory=list)  # mean loss of the others, both halves
    missed: list[str] = dataclasses.field(default_factory=list)


def judge(name: str, category: str, categories: dict[str, str], base: dict[str, float],
          after: dict[str, float]) -> tuple[bool, float, str]:  # fmt: skip
    """(meets the bars, mean loss of the others, what missed) for one forget on one half."""
    same = [n for n, c in categories.items() if c == category and n != name]
    other = [n for n, c in categories.items() if c != category]
    same_loss = mean([base[n] - after[n] for n in same])
    other_loss = mean([base[n] - after[n] for n in other])
    ok = after[name] <= 0.10 and same_loss <= 0.10 and other_loss <= 0.05
    why = f"{after[name]:.2f}, same {-same_loss:+.2f}, other {-other_loss:+.2f}"
    return ok, mean([base[n] - after[n] for n in same + other]), why


def judge_halves(pipe: object, patch: Path, name: str, halves: dict[str, WorldBench],
                 base: dict[str, dict[str, float]]) -> tuple[dict[str, tuple[bool, float, str]], float]:  # fmt: skip
    """With `patch` loaded: each half's verdict on forgetting `name`, and its target after on the transfer half."""
    categories = halves["trained"].categories
    load_patch(pipe, patch, adapter_name="sweep")
    verdicts, transfer_after = {}, 0.0
    for half, bench in halves.items():
        after = bench.scores(pipe, "patched")
        verdicts[half] = judge(name, categories[name], categories, base[half], after)
        transfer_after = after[name] if half == "transfer" else transfer_after
    return verdicts, transfer_after


def evaluate(settings: ForgetSettings, knob: str, halves: dict[str, WorldBench], pipe: object,
             base: dict[str, dict[str, float]], concepts: list[str], folder: Path) -> Outcome:  # fmt: skip
    outcome = Outcome()
    for name in concepts:
        category = halves["trained"].categories[name]
        mine = preset_settings("testbed-nsfw", settings, set(knob.split(","))) if category == "nsfw" else settings
        patch = folder / f"{name}.safetensors"
        forget(ForgetRequest(ModelSource("testbed"), [Concept(name, category)], patch, settings=mine, force=True))
        verdicts, transfer_after = judge_halves(pipe, patch, name, halves, base)
        outcome.targets.append(transfer_after)
        unload_patches(pipe)
        ok_trained, ok_transfer = verdicts["trained"][0], verdicts["transfer"][0]
        outcome.met_trained += ok_trained
        outcome.met_transfer += ok_transfer
        outcome.met += ok_trained and ok_transfer
        outcome.collateral.append(mean([v[1] for v in verdicts.values()]))
        misses = [f"{half} {v[2]}" for half, v in verdicts.items() if not v[0]]
        if misses:
            outcome.missed.append(f"{name} ({'; '.join(misses)})")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per tuning prompt")
    parser.add_argument("--concept", action="append", default=None, help="only these concepts (repeatable)")
    parser.add_argument("--defaults-only", action="store_true", help="score the defaults alone (a smoke run)")
    parser.add_argument("--only", action="append", default=None, metavar="KNOB=VALUE",
                        help="run these settings, not the sweep (repeatable; A=1,B=2 moves two knobs at once; "
                             "the defaults still run first)")  # fmt: skip
    parser.add_argument("--skip-defaults", action="store_true",
                        help="do not re-run the defaults (a forget is deterministic: their row repeats)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/tradeoff.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    halves = {"trained": WorldBench.tuning(args.images), "transfer": WorldBench.transfer(args.images)}
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    base = {half: bench.scores(pipe, "base") for half, bench in halves.items()}
    concepts = args.concept or list(halves["trained"].categories)
    n = len(concepts)
    points = []
    print(f"world A tuning split, {args.images} images per prompt, {n} concepts; defaults {DEFAULTS}")
    print("| knob | value | meeting the bars (both halves) | trained half | transfer half "
          "| mean target after (transfer) | mean collateral | missed (target, losses) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    # the defaults always run first: every setting is compared with a baseline from the same run
    runs: list[tuple[str, object, ForgetSettings]] = [] if args.skip_defaults else [("defaults", None, DEFAULTS)]
    for item in args.only or []:
        moved = {k: json.loads(v) for k, v in (part.split("=", 1) for part in item.split(","))}
        shown = ",".join(moved) if len(moved) > 1 else next(iter(moved))
        value = ",".join(json.dumps(v) for v in moved.values())
        runs.append(
            (shown, value if len(moved) > 1 else next(iter(moved.values())), dataclasses.replace(DEFAULTS, **moved))
        )
    if not args.defaults_only and not args.only:
        runs += [
            (knob, v, dataclasses.replace(DEFAULTS, **{knob: v})) for knob, values in SWEEP.items() for v in values
        ]
    with tempfile.TemporaryDirectory() as folder:
        for knob, value, settings in runs:
            out = evaluate(settings, knob, halves, pipe, base, concepts, Path(folder))
            target, collateral = mean(out.targets), mean(out.collateral)
            points.append((knob, value, out.met, target, collateral))
            shown = "" if value is None else f"{value}"
            print(f"| {knob} | {shown} | {out.met} of {n} | {out.met_trained} | {out.met_transfer} | {target:.3f} "
                  f"| {collateral:+.3f} | {'; '.join(out.missed) or '—'} |", flush=True)  # fmt: skip

    # the rule of the docstring: most concepts meeting the bars, then forgetting that carries, then collateral
    if points:
        knob, value, met, target, collateral = min(points, key=lambda p: (-p[2], p[3], p[4]))
        print(f"picked by the rule: {knob} {'' if value is None else value} ({met} of {n} meet the bars)")

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for knob, value, met, target, collateral in points:
        label = "defaults" if value is None else f"{knob} {value}"
        axes.scatter([collateral], [target], s=30 + 12 * met)
        axes.annotate(f"{label} ({met}/{len(concepts)})", (collateral, target), textcoords="offset points",
                      xytext=(4, 4), fontsize=7)  # fmt: skip
    axes.set_xlabel("mean M-Score lost by the other concepts (collateral)")
    axes.set_ylabel("mean M-Score of the target after, transfer phrasings")
    title = "Choosing defaults on world A's tuning split only"
    axes.set_title(f"{title}\n(trained and transfer phrasings; never its bench, never world B)", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
