"""`patchkit apply` on an SD 1.5-shaped fp16 single file (~2 GB): against `cp` and against diffusers.

Run: .venv/bin/python bench/apply.py [--root /tmp/patchkit-bench] [--repeats 3]

Every arm runs as its own process on a warm page cache (the checkpoint is read once
first), after earlier outputs are removed and synced, and its peak RSS comes from wait4().
The arms take turns for --repeats rounds; each row is the arm's median round. Arms:

- cp: the disk limit, and cp + sync: the same made durable, as apply's output is;
- patchkit apply, cold: the apply service with the digest cache off (it hashes all 1.7 GB);
- patchkit apply, warm: the same with the digest cache filled by an earlier run;
- `patchkit apply` CLI, warm: the command as users run it, and with --no-fsync (not durable, like cp);
- diffusers: from_single_file + load_lora_weights + fuse_lora + save_pretrained.

"work" is the time inside the process after imports, so process start-up (Python, torch)
can be told apart from the work itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SETUP = """
import json, sys, time
from pathlib import Path
"""
PATCHKIT_ARM = (
    SETUP
    + """
from patchkit.services.apply import PatchSource, apply
start = time.perf_counter()
apply(sys.argv[1], [PatchSource(Path(sys.argv[2]))], Path(sys.argv[3]), config=Path(sys.argv[4]))
print(json.dumps({"work": time.perf_counter() - start}))
"""
)
DIFFUSERS_ARM = (
    SETUP
    + """
import torch
from diffusers import StableDiffusionPipeline
start = time.perf_counter()
pipe = StableDiffusionPipeline.from_single_file(sys.argv[1], config=sys.argv[4], torch_dtype=torch.float16,
                                                local_files_only=True, safety_checker=None)
pipe.load_lora_weights(sys.argv[2])
pipe.fuse_lora()
pipe.unload_lora_weights()
pipe.save_pretrained(sys.argv[3])
print(json.dumps({"work": time.perf_counter() - start}))
"""
)


def quiet(outputs: Path) -> None:
    """Remove earlier arms' outputs and flush dirty pages, so no arm pays for another's writeback."""
    for path in outputs.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    subprocess.run(["sync"], check=True)


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float | None]:
    """(wall seconds, peak RSS in MB, in-process work seconds if printed)."""
    quiet(OUTPUTS)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out = process.stdout.read().decode() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed")
    work = json.loads(out.strip().splitlines()[-1])["work"] if out.strip() else None
    return wall, usage.ru_maxrss / 1024, work


FIXTURE = """
import shutil, sys
from pathlib import Path
from patchkit.services.fixtures import build_random_model
from patchkit.services.patches import synthetic_patch
folder, single, patch = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
if not single.is_file():
    shutil.rmtree(folder, ignore_errors=True)
    build_random_model("sd15", folder, dtype="fp16", single_file=single)
if not patch.is_file():
    synthetic_patch(str(folder), patch, concept="circle")
"""


OUTPUTS = Path("/tmp/patchkit-bench/outputs")


def fixture(root: Path) -> tuple[Path, Path, Path]:
    """Built in a child process: a forked child inherits its parent's peak RSS, so the parent stays small."""
    folder, single, patch = root / "sd15-fp16", root / "sd15-fp16.safetensors", root / "rank4.safetensors"
    if not (single.is_file() and patch.is_file()):
        print("building the SD 1.5-shaped fp16 checkpoint (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", FIXTURE, str(folder), str(single), str(patch)], check=True)
    return folder, single, patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/patchkit-bench"))
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all arms; each row is the median")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    global OUTPUTS
    OUTPUTS = args.root / "outputs"
    folder, single, patch = fixture(args.root)
    outputs = OUTPUTS
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    cache = args.root / "digests"
    shutil.rmtree(cache, ignore_errors=True)
    python = sys.executable
    subprocess.run(["cat", str(single)], stdout=subprocess.DEVNULL, check=True)  # every arm starts page-cache warm
    cold = {"PATCHKIT_NO_CACHE": "1"}
    warm = {"PATCHKIT_CACHE_DIR": str(cache)}
    arm = [python, "-c", PATCHKIT_ARM, str(single), str(patch)]
    run([*arm, str(outputs / "fill.safetensors"), str(folder)], warm)  # fills the digest cache
    # apply fsyncs its output before the rename (durable, not only atomic); "cp + sync" does the same
    synced = ["sh", "-c", f"cp {single} {outputs / 'cp2.safetensors'} && sync {outputs / 'cp2.safetensors'}"]
    cli = [python, "-m", "patchkit", "--quiet", "apply", str(single), str(patch), "--config", str(folder)]
    diffusers = [python, "-c", DIFFUSERS_ARM, str(single), str(patch), str(outputs / "diffusers"), str(folder)]
    arms = {
        "cp": (["cp", str(single), str(outputs / "cp.safetensors")], None),
        "cp + sync": (synced, None),
        "patchkit apply, cold digests": ([*arm, str(outputs / "cold.safetensors"), str(folder)], cold),
        "patchkit apply, warm digests": ([*arm, str(outputs / "warm.safetensors"), str(folder)], warm),
        "`patchkit apply` CLI, warm": ([*cli, "-o", str(outputs / "cli.safetensors")], warm),
        "`patchkit apply --no-fsync` CLI, warm": ([*cli, "--no-fsync", "-o", str(outputs / "ns.safetensors")], warm),
        "diffusers load + fuse_lora + save": (diffusers, None),
    }
    # the arms take turns, `repeats` rounds, and each row is its median round: a slow disk
    # moment then hits one sample of one arm, not the whole comparison
    samples: dict[str, list[tuple[float, float, float | None]]] = {label: [] for label in arms}
    for _ in range(args.repeats):
        for label, (command, env) in arms.items():
            samples[label].append(run(command, env))
    rows = []
    for label, runs in samples.items():
        ordered = sorted(runs, key=lambda r: r[0])
        rows.append((label, *ordered[len(ordered) // 2]))

    size = single.stat().st_size / 1e9
    cp_wall = rows[0][1]
    print(f"SD 1.5-shaped fp16 single file, {size:.2f} GB; rank-4 attn2 to_k/to_v patch; 2 cores; warm page cache; "
          f"median of {args.repeats} rounds")  # fmt: skip
    print("| arm | wall s | work s (after imports) | peak RSS MB | wall / cp |")
    print("|---|---:|---:|---:|---:|")
    for label, wall, rss, work in rows:
        shown = f"{work:.2f}" if work is not None else "–"
        print(f"| {label} | {wall:.2f} | {shown} | {rss:.0f} | {wall / cp_wall:.2f}x |")
    apply_warm = rows[3]
    diffusers_row = rows[-1]
    print(f"\npatchkit apply (warm, work) vs cp: {apply_warm[3] / cp_wall:.2f}x, vs cp + sync: "
          f"{apply_warm[3] / rows[1][1]:.2f}x; "
          f"diffusers / patchkit (wall): {diffusers_row[1] / apply_warm[1]:.1f}x; "
          f"(work): {diffusers_row[3] / apply_warm[3]:.1f}x")  # fmt: skip
    shutil.rmtree(outputs, ignore_errors=True)


if __name__ == "__main__":
    main()
