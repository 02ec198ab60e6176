"""Images per second on the testbed at the default sampler settings: batched against one at a time.

Run: .venv/bin/python bench/score.py [--images 64]
Both arms generate the same prompts and seeds in the same process; the batched arm is what
`patchkit score` does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from patchkit.backend import pipeline
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.models import refs
from patchkit.services.testbed import DEFAULT_SAMPLER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    prompts = ["a photo of alice", "a ring in the style of neon", "a photo of a circle", "a photo of gore"]
    asked = [prompts[i % len(prompts)] for i in range(args.images)]
    seeds = list(range(args.images))
    generate(pipe, asked[:2], seeds[:2], DEFAULT_SAMPLER)  # warm-up
    rows = []
    results = {}
    for label, batch in (("one at a time", 1), (f"batched ({DEFAULT_SAMPLER.batch_size})", DEFAULT_SAMPLER.batch_size)):
        settings = SamplerSettings(steps=DEFAULT_SAMPLER.steps, guidance=DEFAULT_SAMPLER.guidance, batch_size=batch)
        start = time.perf_counter()
        images = generate(pipe, asked, seeds, settings)
        seconds = time.perf_counter() - start
        results[label] = np.stack([np.asarray(im, dtype=np.int16) for im in images])
        rows.append((label, seconds, args.images / seconds))
    base = rows[0][2]
    sampler = DEFAULT_SAMPLER
    print(f"testbed, {args.images} images, {sampler.steps} DDIM steps, guidance {sampler.guidance}, 2 threads")
    print("| mode | seconds | images/s | speed-up |")
    print("|---|---:|---:|---:|")
    for label, seconds, rate in rows:
        print(f"| {label} | {seconds:.2f} | {rate:.1f} | {rate / base:.1f}x |")
    a, b = results.values()
    print(f"max pixel difference between the two arms: {int(np.abs(a - b).max())} (of 255)")


if __name__ == "__main__":
    main()
