"""Issue 3's quality table: every testbed concept forgotten alone, scored before and after.

Run: .venv/bin/python bench/quality.py [--images 16] [--concept circle ...] [--set preserve_weight=3]

Columns: the target's M-Score before and after; the mean M-Score of the other concepts of
its category, before and after; the mean of the other categories' concepts, before and
after; patch bytes; training seconds. The bars: target after <= 0.10, same-category
neighbours lose <= 0.10, other categories lose <= 0.05, patch < 1% of the UNet.
The stand-in unsafe concept (gore) is trained as `--preset testbed-nsfw` trains it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _testbed import TestbedBench, settings_from

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.presets import preset_settings
from patchkit.training.prompts import Concept


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per bench prompt")
    parser.add_argument("--concept", action="append", default=None, help="only these concepts (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE over the default settings")
    args = parser.parse_args()
    settings = settings_from(args.set)
    given = {item.split("=", 1)[0] for item in args.set}  # the fields --set names win over the preset's
    bench = TestbedBench(args.images)
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    before = bench.scores(pipe, "base")
    concepts = args.concept or list(bench.categories)
    print(f"testbed, {args.images} images per bench prompt; settings {settings}")
    print("| target | before → after | same category before → after | other categories before → after "
          "| patch bytes (% of UNet) | train s | bars |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in concepts:
            category = bench.categories[name]
            patch = Path(folder) / f"{name}.safetensors"
            started = time.perf_counter()
            mine = preset_settings("testbed-nsfw", settings, given) if category == "nsfw" else settings
            result = forget(ForgetRequest(ModelSource("testbed"), [Concept(name, category)], patch, settings=mine))
            seconds = time.perf_counter() - started
            load_patch(pipe, patch, adapter_name="quality")
            after = bench.scores(pipe, "patched")
            unload_patches(pipe)
            same = [n for n, c in bench.categories.items() if c == category and n != name]
            other = [n for n, c in bench.categories.items() if c != category]
            same_b, same_a = mean([before[n] for n in same]), mean([after[n] for n in same])
            other_b, other_a = mean([before[n] for n in other]), mean([after[n] for n in other])
            size = patch.stat().st_size
            ok = after[name] <= 0.10 and (not same or same_b - same_a <= 0.10) and other_b - other_a <= 0.05
            same_cell = f"{same_b:.2f} → {same_a:.2f}" if same else "—"
            print(f"| {name} | {before[name]:.2f} → {after[name]:.2f} | {same_cell} | {other_b:.2f} → {other_a:.2f} "
                  f"| {size:,} ({size / unet_bytes:.2%}) | {result.seconds:.1f} ({seconds:.1f} whole) "
                  f"| {'met' if ok else '**missed**'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
