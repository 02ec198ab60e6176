"""The closed-form method against the FMN trainer: wall time, compute time and peak RSS.

Run: .venv/bin/python bench/closed_form.py [--part testbed|full|whole|all] [--runs 5] [--concepts 1 10 100]
                                           [--families sd15 sdxl] [--positions prompt context] [--keep DIR]

Every arm runs in its own process, with 2 threads; peak RSS comes from wait4().
- testbed: the whole `patchkit forget testbed -c circle --category object` as a user runs it,
  with `--method closed-form` and with the default FMN, `--runs` times each (medians).
  "compute" is the method's own seconds after loading (the `seconds` of `--json`).
- full: full-size SD 1.5- and SDXL-shaped random-weight models (published configs, random
  init; nothing downloaded), for 1, 10 and 100 concepts forgotten in one solve with the
  default preservation (16 neighbour words per concept in 4 templates, and the 32 generic
  captions), under each `--positions`. The vocabulary has 8,000 whole words, so neighbour
  search finds its 16 words per concept as on SD's real vocabulary and the retain sets are
  of real size (about 60 prompts a concept). The encoders are written to safetensors files
  in fp16 (not timed) and streamed from them as a real run streams a checkpoint; "compute"
  is what a real run does after loading: neighbour search, encode every prompt, gather the
  sums, solve, cut each projection to rank 8. The projections are random tensors of the
  UNet's own shapes, made one at a time as the real run reads them from the file.
  `--source CHECKOUT` runs the same arms on another checkout's package, as the baseline
  (a checkout from before `--positions` runs "context" only).
- whole: the whole `patchkit forget` command on a full-size SDXL-shaped fp16 checkpoint
  built by `patchkit testbed fixture` (6.5 GB on disk; `--keep DIR` reuses it), with the
  same vocabulary: the peak RSS of the process a user runs. Its first run hashes the
  checkpoint for the fingerprint; later runs find the digests cached.
FMN is not run at full size: bench/forget.py measures its SD 1.5-shaped step at 10 s (256 px,
batch 1), so its default 60 steps alone take ~10 min per run on these 2 cores.
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

# The words of the benchmark's vocabulary, shared by the in-process arm and the whole command.
VOCABULARY = r"""
import random
from patchkit.core.retain_set import GENERIC_RETAIN
from patchkit.core.world import GENERIC_WORLD


def vocabulary():
    # 8,000 whole words (seeded pseudo-words), so neighbour search finds its 16 words per
    # concept as it does in SD's 49,408-token CLIP vocabulary: retain sets of real size; and,
    # as in CLIP's vocabulary, every word of the templates and captions is one token
    rng = random.Random(0)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    made = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(8200)})[:8000]
    texts = [*GENERIC_RETAIN, *(t for ts in GENERIC_WORLD.templates.values() for t in ts)]
    english = {w.strip(",.").lower() for text in texts for w in text.replace("{}", " ").replace("-", " ").split()}
    return made, sorted(set(made) | {w for w in english if w.isalpha()})


def concept_words(count):
    return vocabulary()[0][::7][:count]
"""

FULL_ARM = (
    r"""
import os, sys
if os.environ.get("PATCHKIT_SOURCE"):
    # another checkout's package: put it first, past the editable install's finder (which
    # would otherwise import this checkout's patchkit whatever PYTHONPATH says)
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                     and "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, os.environ["PATCHKIT_SOURCE"])
"""
    + VOCABULARY
    + r"""
import json, sys, time
import patchkit
source = os.environ.get("PATCHKIT_SOURCE")
assert not source or patchkit.__file__.startswith(source), f"{patchkit.__file__} is not from {source}"
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from pathlib import Path
from safetensors.torch import save_file

from patchkit.backend.clip_text import ClipTextEncoder
from patchkit.backend.text_side import load_text_side
from patchkit.io.safetensors_io import read_header
from patchkit.io.tensor_spans import header_spans
from patchkit.services.fixtures import published_configs
from patchkit.services.preservation import retain_set
from patchkit.testbed.tokenizer import write_tokenizer_files
from patchkit.training.closed_form import solve
from patchkit.training.prompts import Concept, training_prompts
from patchkit.training.settings import ClosedFormSettings

family, count, folder, positions = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2)
configs = published_configs(family)


def encoder_file(component):
    # random fp16 weights of the published shapes, written as a checkpoint ships its encoder:
    # the run streams them from the file as it streams a real model's
    config = configs[component]
    generator = torch.Generator().manual_seed(len(component))
    width, inner = config["hidden_size"], config["intermediate_size"]
    positions = config["max_position_embeddings"]
    shapes = {"token_embedding": (config["vocab_size"], width), "position_embedding": (positions, width),
              "fc1": (inner, width), "fc2": (width, inner)}
    tensors = {}
    for key in ClipTextEncoder.keys(config):
        if "layer_norm" in key:
            tensors[key] = (torch.ones(width) if key.endswith("weight") else torch.zeros(width)).half()
        elif key.endswith("bias"):
            tensors[key] = torch.zeros(inner if "fc1" in key else width).half()
        else:
            shape = next((v for k, v in shapes.items() if k in key), (width, width))
            tensors[key] = (torch.randn(shape, generator=generator) * 0.02).half()
    path = folder / component / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(tensors, str(path))
    del tensors
    return header_spans(path, read_header(path))


made, words = vocabulary()
spans = {}
for component in ("text_encoder", "text_encoder_2"):
    if component in configs:
        write_tokenizer_files(words, folder / component.replace("text_encoder", "tokenizer"), 77)
        spans[component] = encoder_file(component)
text = load_text_side(folder, configs, spans)
with init_empty_weights():
    unet = UNet2DConditionModel(**{k: v for k, v in configs["unet"].items() if not k.startswith("_")})
shapes = sorted((n, tuple(m.weight.shape)) for n, m in unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v")))
del unet


def projections():
    generator = torch.Generator().manual_seed(1)
    for name, shape in shapes:
        yield name, torch.randn(shape, generator=generator) / shape[1] ** 0.5


concepts = [Concept(w, "object") for w in concept_words(count)]
assert len(concepts) == count, f"only {len(concepts)} concept words"
started = time.perf_counter()
items = training_prompts(concepts, GENERIC_WORLD.templates)
templates = {i: list(GENERIC_WORLD.templates["object"]) for i in range(count)}
retain = retain_set(GENERIC_WORLD, concepts, templates, [], defaults=True, pipe=text)
prepared = time.perf_counter() - started
# a checkout from before --positions (bench --source) reads every position, as "context" does
settings = ClosedFormSettings() if positions == "context" else ClosedFormSettings(positions=positions)
outcome = solve(text, projections(), concepts, items, retain.prompts, settings)
print(json.dumps({"compute": prepared + outcome.seconds, "retain_prompts": len(retain.prompts),
                  "training_prompts": len(items), "projections": len(shapes),
                  "error": outcome.factorisation_error, "moved": outcome.edited_states,
                  "held": outcome.preserved_states}))
"""
)


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


def full(counts: list[int], families: list[str], modes: list[str], source: Path | None = None) -> None:
    where = f" (the package from {source})" if source else ""
    print(f"\nfull-size random-weight models, compute after load (encode, solve, rank-8 cut), one process each{where}")
    print("| model | --positions | concepts | training prompts | retain prompts | compute s | peak RSS MiB "
          "| rank-cut error |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    labels = {"sd15": "SD 1.5-shaped", "sdxl": "SDXL-shaped"}
    for family, label in ((f, labels[f]) for f in families):
        for mode in modes:
            for count in counts:
                with tempfile.TemporaryDirectory() as folder:
                    env = {"PATCHKIT_SOURCE": str(source.resolve())} if source else None
                    _, peak, stdout = run([sys.executable, "-c", FULL_ARM, family, str(count), folder, mode], env)
                r = json.loads(stdout.strip().splitlines()[-1])
                print(f"| {label} | {mode} | {count} | {r['training_prompts']} | {r['retain_prompts']} "
                      f"| {r['compute']:.2f} | {peak:.0f} | {r['error']:.1%} |", flush=True)  # fmt: skip


def whole(counts: list[int], modes: list[str], keep: Path | None) -> None:
    """The whole `patchkit forget` on a full-size SDXL-shaped fp16 checkpoint: what a user's process holds."""
    cli = Path(sys.executable).with_name("patchkit")
    folder = keep or Path(tempfile.mkdtemp(prefix="sdxl-fixture-"))
    model = folder / "sdxl"
    if not (model / "model_index.json").is_file():
        print(f"\nbuilding the SDXL-shaped fp16 fixture in {model} (6.5 GB; not timed)", flush=True)
        run([str(cli), "-q", "testbed", "fixture", "sdxl", "--dtype", "fp16", "-o", str(model), "--overwrite"])
    words = [sys.executable, "-c", VOCABULARY + "\nimport json; print(json.dumps(vocabulary()[1]))"]
    vocabulary = json.loads(subprocess.run(words, capture_output=True, text=True, check=True).stdout)
    from patchkit.testbed.tokenizer import write_tokenizer_files

    for tokenizer in ("tokenizer", "tokenizer_2"):  # the fixture's own vocabulary is small
        write_tokenizer_files(vocabulary, model / tokenizer, 77)
    concepts = json.loads(subprocess.run([sys.executable, "-c", VOCABULARY + "\nimport json; print(json.dumps("
                                          f"concept_words({max(counts)})))"], capture_output=True, text=True,
                                         check=True).stdout)  # fmt: skip
    print("\nSDXL-shaped fp16 checkpoint, whole `patchkit forget --method closed-form` (fingerprint digests cached)")
    print("| --positions | concepts | retain prompts | wall s | compute s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        for count in counts:
            out = folder / f"p-{mode}-{count}.safetensors"
            names = [arg for word in concepts[:count] for arg in ("-c", word)]
            wall, peak, stdout = run([str(cli), "forget", str(model), *names, "--category", "object", "--method",
                                      "closed-form", "--positions", mode, "-o", str(out), "--overwrite",
                                      "--no-kohya", "--json"])  # fmt: skip
            result = json.loads(stdout)
            show = subprocess.run([str(cli), "show", str(out), "--json"], capture_output=True, text=True, check=True)
            manifest = json.loads(show.stdout)
            retained = len(manifest.get("manifest", manifest)["method"]["settings"]["retain_prompts"])
            print(f"| {mode} | {count} | {retained} | {wall:.1f} | {result['seconds']:.1f} | {peak:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["testbed", "full", "whole", "all"], default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--families", nargs="+", choices=["sd15", "sdxl"], default=["sd15", "sdxl"])
    parser.add_argument("--positions", nargs="+", choices=["context", "prompt"], default=["prompt", "context"])
    parser.add_argument("--keep", type=Path, default=None, help="whole: build (or reuse) the SDXL fixture here")
    parser.add_argument("--source", type=Path, default=None,
                        help="full: run the arms on the patchkit package of another checkout (a baseline)")  # fmt: skip
    args = parser.parse_args()
    if args.part in ("testbed", "all"):
        testbed(args.runs)
    if args.part in ("full", "all"):
        full(args.concepts, args.families, args.positions, args.source)
    if args.part in ("whole", "all"):
        whole(args.concepts, args.positions, args.keep)


if __name__ == "__main__":
    main()
