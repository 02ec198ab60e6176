"""`patchkit correct A --to B` on the testbed: the share of A's prompts judged as B, and B's own score.

Run: .venv/bin/python bench/correct.py [--pair circle:square --pair ring:triangle] [--images 64]

Each pair is corrected alone with the default settings. The base model and the corrected
model draw the same prompts and seeds side by side; the testbed's judge for the category
reads every image. The bar (issue 3): at least 80% of A's prompts judged as B, and B keeps
its score.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.backend.sampling import generate
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.testbed import DEFAULT_SAMPLER
from patchkit.testbed import world
from patchkit.testbed.judging import JudgePanel
from patchkit.training.prompts import Concept
from patchkit.training.settings import correction_settings


def judged(pipe, judges: JudgePanel, name: str, category: str, images: int) -> list[str]:
    prompt = world.bench_prompts(name, category)[0]
    return judges.classify(category, generate(pipe, [prompt] * images, list(range(images)), DEFAULT_SAMPLER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", default=None, help="A:B, objects (repeatable)")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    pairs = [p.split(":") for p in (args.pair or ["circle:square", "ring:triangle"])]
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    judges = JudgePanel.load()
    print(f"testbed, {args.images} images per prompt, defaults; 'A as B' is the share of A's prompts judged B")
    print("| correction | A as A before | A as B after | B before | B after | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for source, target in pairs:
            patch = Path(folder) / f"{source}-{target}.safetensors"
            started = time.perf_counter()
            forget(ForgetRequest(ModelSource("testbed"), [Concept(source, "object", target=target)], patch,
                   settings=correction_settings()))  # fmt: skip
            seconds = time.perf_counter() - started
            before_a = judged(pipe, judges, source, "object", args.images)
            before_b = judged(pipe, judges, target, "object", args.images)
            load_patch(pipe, patch, adapter_name="correction")
            after_a = judged(pipe, judges, source, "object", args.images)
            after_b = judged(pipe, judges, target, "object", args.images)
            unload_patches(pipe)

            def share(verdicts: list[str], name: str) -> float:
                return verdicts.count(name) / len(verdicts)

            cells = [share(before_a, source), share(after_a, target), share(before_b, target), share(after_b, target)]
            shown = " | ".join(f"{c:.2f}" for c in cells)
            print(f"| {source} → {target} | {shown} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
