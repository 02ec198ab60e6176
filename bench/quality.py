"""The quality tables: every concept forgotten alone with the defaults, scored before and after.

Run: .venv/bin/python bench/quality.py [--world testbed|validation|both] [--images 16] [--concept C ...]
                                       [--method fmn|closed-form] [--robust] [--set preserve_weight=3]
                                       [--positions context|prompt] [--anchor-to TEXT]

Chosen on A, measured on B. `testbed` is world A, whose tuning split chose the defaults
(bench/tradeoff.py); its bench's prompts and seeds are never trained, preserved or tuned on
(tests/testbed/test_out_of_sample.py). `validation` is world B, which nothing was tuned on,
run as a user would run a model patchkit does not know: a folder path, `--prompt` in the
model's own phrasing (never its bench's), no `--retain`, and its own bench and judges.

Columns: the target's M-Score before and after; the mean M-Score of the other concepts of
its category, before and after; the mean of the other categories' concepts; the worst
single neighbour's loss; patch bytes; training seconds. Bars: target after <= 0.10,
same-category neighbours lose <= 0.10 on average, other categories lose <= 0.05.
The testbed's stand-in unsafe concept (gore) is trained as `--preset testbed-nsfw` trains it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _testbed import MODELS, WorldBench, settings_from, user_templates

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.presets import preset_settings
from patchkit.training.prompts import Concept
from patchkit.training.settings import ClosedFormSettings, ForgetSettings


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def table(world: str, images: int, only: list[str] | None, settings: ForgetSettings, given: set[str],
          method: str = "fmn", robust: bool = False, positions: str = "context",
          anchor_to: str | None = None) -> int:  # fmt: skip
    """Print world's table; return how many rows meet every bar."""
    bench = WorldBench.report(world, images)
    model = MODELS[world]
    pipe = pipeline.load_pipeline(refs.resolve(model))
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    before = bench.scores(pipe, "base")
    concepts = only or list(bench.categories)
    closed_form = ClosedFormSettings(positions=positions)
    shown = closed_form if method == "closed-form" else settings
    extra = (" --robust" if robust else "") + (f" --anchor-to {anchor_to!r}" if anchor_to is not None else "")
    print(f"\n{world}, {images} images per bench prompt; method {method}{extra}, "
          f"settings {shown}")  # fmt: skip
    print("| target | before → after | same category before → after | other categories before → after "
          "| worst neighbour | patch bytes (% of UNet) | train s | bars |")  # fmt: skip
    print("|---|---|---|---|---|---:|---:|---|")
    met = 0
    with tempfile.TemporaryDirectory() as folder:
        for name in concepts:
            category = bench.categories[name]
            patch = Path(folder) / f"{name}.safetensors"
            started = time.perf_counter()
            harder = category == "nsfw" and method == "fmn"  # the preset's settings are FMN's (--ti, steps)
            mine = preset_settings("testbed-nsfw", settings, given) if harder else settings
            templates = user_templates(world, category)
            request = ForgetRequest(ModelSource(model), [Concept(name, category)], patch, settings=mine,
                                    method=method, closed_form=closed_form, robust=robust, anchor=anchor_to,  # type: ignore[arg-type]
                                    templates=tuple(templates) if templates else None)  # fmt: skip
            result = forget(request)
            seconds = time.perf_counter() - started
            load_patch(pipe, patch, adapter_name="quality")
            after = bench.scores(pipe, "patched")
            unload_patches(pipe)
            same = [n for n, c in bench.categories.items() if c == category and n != name]
            other = [n for n, c in bench.categories.items() if c != category]
            same_b, same_a = mean([before[n] for n in same]), mean([after[n] for n in same])
            other_b, other_a = mean([before[n] for n in other]), mean([after[n] for n in other])
            worst = max((n for n in same + other), key=lambda n: before[n] - after[n])
            size = patch.stat().st_size
            ok = after[name] <= 0.10 and (not same or same_b - same_a <= 0.10) and other_b - other_a <= 0.05
            met += ok
            same_cell = f"{same_b:.2f} → {same_a:.2f}" if same else "—"
            verdict = "met" if ok else "**missed**"
            print(f"| {name} | {before[name]:.2f} → {after[name]:.2f} | {same_cell} | {other_b:.2f} → {other_a:.2f} "
                  f"| {worst} {after[worst] - before[worst]:+.2f} | {size:,} ({size / unet_bytes:.2%}) "
                  f"| {result.seconds:.1f} ({seconds:.1f} whole) | {verdict} |", flush=True)  # fmt: skip
    print(f"{world}: {met} of {len(concepts)} meet every bar")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["testbed", "validation", "both"], default="both")
    parser.add_argument("--images", type=int, default=16, help="images per bench prompt")
    parser.add_argument("--concept", action="append", default=None, help="only these concepts (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE over the default settings")
    parser.add_argument("--method", choices=["fmn", "closed-form"], default="fmn")
    parser.add_argument("--robust", action="store_true", help="forget with --robust")
    parser.add_argument("--positions", choices=["context", "prompt"], default="context",
                        help="closed-form: the states the solve reads")  # fmt: skip
    parser.add_argument("--anchor-to", default=None, help='forget --anchor-to TEXT ("" for the empty prompt)')
    args = parser.parse_args()
    settings = settings_from(args.set)
    given = {item.split("=", 1)[0] for item in args.set}  # the fields --set names win over the preset's
    for world in ("testbed", "validation") if args.world == "both" else (args.world,):
        table(world, args.images, args.concept, settings, given, args.method, args.robust, args.positions,
              args.anchor_to)  # fmt: skip


if __name__ == "__main__":
    main()
