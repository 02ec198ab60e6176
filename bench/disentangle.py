"""Disentanglement on the testbed: `forget -c noir --context circle`, against a plain forget of noir.

Run: .venv/bin/python bench/disentangle.py [--style noir] [--context circle] [--images 32]
                                           [--grid docs/disentangle.png]

The base model, the plain forget and the disentanglement draw the same prompts and seeds
side by side; the testbed's judges read every image. What a disentanglement should do:
noir stops acting on circles (the style judge no longer sees noir there) while the circle
stays a circle, noir on every other object stays noir, and a circle alone is untouched.
A plain forget of noir removes it everywhere: the contrast is the point of the table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _testbed import settings_from
from PIL import Image

from patchkit.backend import pipeline
from patchkit.backend.lora import load_patch, unload_patches
from patchkit.backend.sampling import generate
from patchkit.core.grid import labelled_grid, stack_vertically
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.testbed import DEFAULT_SAMPLER
from patchkit.testbed import world
from patchkit.testbed.judging import JudgePanel
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings


def rows(style: str, context: str) -> list[tuple[str, str, str, str]]:
    """(label, prompt, judged category, concept whose share is reported)."""
    others = [o for o in world.OBJECTS if o != context]
    return [
        (f"{style} on {context}s", f"a {context} in the style of {style}", "style", style),
        (f"  ...still a {context}", f"a {context} in the style of {style}", "object", context),
        *[(f"{style} on {o}s", f"a {o} in the style of {style}", "style", style) for o in others],
        (f"{context} alone", f"a photo of a {context}", "object", context),
    ]


def shares(
    pipe, judges: JudgePanel, table: list[tuple[str, str, str, str]], images: int
) -> tuple[list[float], dict[str, list[Image.Image]]]:
    """Each row's share, and the images of each prompt (drawn once, judged by every row that asks)."""
    drawn: dict[str, list[Image.Image]] = {}
    out = []
    for _, prompt, category, concept in table:
        if prompt not in drawn:
            drawn[prompt] = generate(pipe, [prompt] * images, list(range(images)), DEFAULT_SAMPLER)
        out.append(judges.classify(category, drawn[prompt]).count(concept) / images)
    return out, drawn


def picture(drawn: dict[str, dict[str, list[Image.Image]]], prompts: list[str], per_prompt: int) -> Image.Image:
    """One block per arm: the first images of each prompt, side by side, captioned with the prompt."""
    blocks = []
    for arm, by_prompt in drawn.items():
        images = [image for prompt in prompts for image in by_prompt[prompt][:per_prompt]]
        short = [p.removeprefix("a photo of a ").removeprefix("a ").replace(" in the style of ", ", ") for p in prompts]
        captions = [label for label in short for _ in range(per_prompt)]
        blocks.append(labelled_grid(images, captions, title=arm, columns=per_prompt * len(prompts), cell=80))
    return stack_vertically(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", default="noir")
    parser.add_argument("--context", default="circle")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--grid", type=Path, default=None, help="also save the images as a PNG grid here")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE for the disentanglement run only")
    args = parser.parse_args()
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    judges = JudgePanel.load()
    table = rows(args.style, args.context)
    columns, drawn = {}, {}
    columns["base"], drawn["base"] = shares(pipe, judges, table, args.images)
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        runs = {
            f"forget {args.style}": (Concept(args.style, "style"), ForgetSettings()),
            f"forget {args.style} --context {args.context}": (
                Concept(args.style, "style", context=args.context),
                settings_from(args.set),
            ),
        }
        for label, (concept, settings) in runs.items():
            patch = Path(folder) / f"{len(seconds)}.safetensors"
            started = time.perf_counter()
            forget(ForgetRequest(ModelSource("testbed"), [concept], patch, settings=settings))
            seconds[label] = time.perf_counter() - started
            load_patch(pipe, patch, adapter_name="bench")
            columns[label], drawn[label] = shares(pipe, judges, table, args.images)
            unload_patches(pipe)
    print(f"testbed, {args.images} images per prompt; disentanglement settings {settings_from(args.set)}; share of "
          "images the judge reads as the concept")  # fmt: skip
    print("| prompt | judged as | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for i, (label, prompt, _, concept) in enumerate(table):
        cells = " | ".join(f"{column[i]:.2f}" for column in columns.values())
        print(f'| {label}: "{prompt}" | {concept} | {cells} |')
    print("\n" + ", ".join(f"{label}: {s:.1f} s" for label, s in seconds.items()))
    if args.grid is not None:
        shown = [table[0][1], table[2][1], table[-1][1]]  # A on the context, A elsewhere, the context alone
        picture(drawn, shown, per_prompt=4).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
