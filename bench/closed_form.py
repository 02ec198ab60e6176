"""The closed-form method against the FMN trainer: wall time, compute time and peak RSS.

Run: .venv/bin/python bench/closed_form.py [--part testbed|full|both] [--runs 5] [--concepts 1 10 100]

Every arm runs in its own process, with 2 threads; peak RSS comes from wait4().
- testbed: the whole `patchkit forget testbed -c circle --category object` as a user runs it,
  with `--method closed-form` and with the default FMN, `--runs` times each (medians).
  "compute" is the method's own seconds after loading (the `seconds` of `--json`).
- full: full-size SD 1.5- and SDXL-shaped random-weight models (published configs, random
  init; nothing downloaded), for 1, 10 and 100 concepts forgotten in one solve with the
  default preservation (16 neighbour words per concept in 4 templates, and the 32 generic
  captions). Built in the arm's process (not timed), then "compute" is what a real run
  does after loading: encode every prompt, gather the sums, solve, cut each projection
  to rank 8. The projections are random tensors of the UNet's own shapes, made one at a
  time as the real run reads them from the file; the text encoders are held in fp16, as
  SD checkpoints ship them and the real run keeps them (widened a layer at a time).
  The fixture vocabulary is small, so neighbour search finds few words and the retain
  sets here are smaller than on a real SD vocabulary. FMN is not run here: bench/forget.py
  measures its SD 1.5-shaped step at 10 s (256 px, batch 1), so its default 60 steps alone take ~10 min
  per run on these 2 cores, before the base model draws its 8 training images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_ARM = r"""
import json, sys, time
import torch
from accelerate import init_empty_weights
from patchkit.backend.clip_text import ClipTextEncoder
from pathlib import Path
from transformers import CLIPTokenizer
from diffusers import UNet2DConditionModel

from patchkit.backend.text_side import TextSide
from patchkit.core.world import GENERIC_WORLD
from patchkit.services.fixtures import published_configs
from patchkit.services.preservation import retain_set
from patchkit.testbed.tokenizer import write_tokenizer_files
from patchkit.testbed.world import vocabulary_words
from patchkit.training.closed_form import solve
from patchkit.training.prompts import Concept, training_prompts
from patchkit.training.settings import ClosedFormSettings

family, count, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(2)
torch.manual_seed(0)
configs = published_configs(family)
words = [w for w in vocabulary_words() if w.isalpha() and len(w) > 3]
write_tokenizer_files(words, folder, 77)


def encoder(config):
    generator = torch.Generator().manual_seed(len(config))
    width, vocab = config["hidden_size"], max(config.get("vocab_size", 0), 1024)
    tensors = {}
    for key in ClipTextEncoder.keys(config):
        if "layer_norm" in key:
            tensors[key] = torch.ones(width) if key.endswith("weight") else torch.zeros(width)
        elif key.endswith("bias"):
            rows = config["intermediate_size"] if "fc1" in key else width
            tensors[key] = torch.zeros(rows)
        else:
            inner, positions = config["intermediate_size"], config["max_position_embeddings"]
            shapes = {"token_embedding": (vocab, width), "position_embedding": (positions, width),
                      "fc1": (inner, width), "fc2": (width, inner)}
            shape = next((v for k, v in shapes.items() if k in key), (width, width))
            tensors[key] = (torch.randn(shape, generator=generator) * 0.02).half()
    # held in fp16, as SD checkpoints ship their text encoders (and as a real run keeps them)
    return ClipTextEncoder(config, {k: v.half() for k, v in tensors.items()})


tokenizer = CLIPTokenizer.from_pretrained(str(folder))
first = encoder(configs["text_encoder"])
second = encoder(configs["text_encoder_2"]) if "text_encoder_2" in configs else None
text = TextSide(tokenizer, first, tokenizer if second is not None else None, second)
with init_empty_weights():
    unet = UNet2DConditionModel(**{k: v for k, v in configs["unet"].items() if not k.startswith("_")})
shapes = sorted((n, tuple(m.weight.shape)) for n, m in unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v")))
del unet


def projections():
    generator = torch.Generator().manual_seed(1)
    for name, shape in shapes:
        yield name, torch.randn(shape, generator=generator) / shape[1] ** 0.5


names = words + [f"{a} {b}" for a in words for b in words if a != b]  # the fixture vocabulary is small
concepts = [Concept(w, "object") for w in names[:count]]
assert len(concepts) == count, f"only {len(concepts)} concept words"
started = time.perf_counter()
items = training_prompts(concepts, GENERIC_WORLD.templates)
templates = {i: list(GENERIC_WORLD.templates["object"]) for i in range(count)}
retain = retain_set(GENERIC_WORLD, concepts, templates, [], defaults=True, pipe=text)
prepared = time.perf_counter() - started
outcome = solve(text, projections(), concepts, items, retain.prompts, ClosedFormSettings())
print(json.dumps({"compute": prepared + outcome.seconds, "retain_prompts": len(retain.prompts),
                  "training_prompts": len(items), "projections": len(shapes),
                  "error": outcome.factorisation_error, "moved": outcome.edited_states,
                  "held": outcome.preserved_states}))
"""


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out


def testbed(runs: int) -> None:
    cli = Path(sys.executable).with_name("patchkit")
    print("\ntestbed, forget circle, whole command (medians of", runs, "runs)")
    print("| method | wall s | compute s | peak RSS MiB | patch bytes |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    for method, repeats in (("closed-form", runs), ("fmn", max(1, runs // 2))):
        walls, computes, rss, size = [], [], [], 0
        with tempfile.TemporaryDirectory() as folder:
            for k in range(repeats):
                out = Path(folder) / f"p{k}.safetensors"
                wall, peak, stdout = run([str(cli), "forget", "testbed", "-c", "circle", "--category", "object",
                                          "--method", method, "-o", str(out), "--json"])  # fmt: skip
                result = json.loads(stdout)
                walls.append(wall)
                computes.append(result["seconds"])
                rss.append(peak)
                size = result["bytes"]
        rows[method] = (statistics.median(walls), statistics.median(computes), statistics.median(rss))
        print(f"| {method} | {rows[method][0]:.2f} | {rows[method][1]:.3f} | {rows[method][2]:.0f} | {size:,} |",
              flush=True)  # fmt: skip
    cf, fmn = rows["closed-form"], rows["fmn"]
    print(f"| closed-form / fmn | {cf[0] / fmn[0]:.2f}x | {cf[1] / fmn[1]:.4f}x | {cf[2] / fmn[2]:.2f}x | |")


def full(counts: list[int], families: list[str]) -> None:
    print("\nfull-size random-weight models, compute after load (encode + solve + rank-8 cut), one process each")
    print("| model | concepts | training prompts | retain prompts | compute s | peak RSS MiB | rank-cut error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"sd15": "SD 1.5-shaped", "sdxl": "SDXL-shaped"}
    for family, label in ((f, labels[f]) for f in families):
        for count in counts:
            with tempfile.TemporaryDirectory() as folder:
                _, peak, stdout = run([sys.executable, "-c", FULL_ARM, family, str(count), folder])
            r = json.loads(stdout.strip().splitlines()[-1])
            print(f"| {label} | {count} | {r['training_prompts']} | {r['retain_prompts']} | {r['compute']:.2f} "
                  f"| {peak:.0f} | {r['error']:.1%} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["testbed", "full", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--families", nargs="+", choices=["sd15", "sdxl"], default=["sd15", "sdxl"])
    args = parser.parse_args()
    if args.part in ("testbed", "both"):
        testbed(args.runs)
    if args.part in ("full", "both"):
        full(args.concepts, args.families)


if __name__ == "__main__":
    main()
