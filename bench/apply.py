"""`patchkit apply` on an SD 1.5-shaped fp16 single file (~2 GB): against `cp` and against diffusers.

Run: .venv/bin/python bench/apply.py [--root /tmp/patchkit-bench] [--repeats 3]

Every arm runs as its own process, after earlier outputs are removed and synced, and its
peak RSS comes from wait4(). Most arms start with the checkpoint in the page cache (read
just before); the "base read from disk" arms evict it first (posix_fadvise DONTNEED), as
when a release engineer applies to a checkpoint not touched since boot: there `cp` is the
disk limit, where on a cached file it is a kernel memory copy. The arms take turns for
--repeats rounds; each row is the arm's median round. Arms:

- cp: the copy, and cp + sync: the same made durable, as apply's output is;
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
import tempfile
import time
from pathlib import Path

SETUP = """
import json, sys, time
from pathlib import Path
"""
PATCHKIT_ARM = (
    SETUP
    + """
from patchkit.services.apply import apply
from patchkit.services.sources import PatchSource
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


def evict(path: Path) -> None:
    """Drop `path` from the page cache, so the next reader waits for the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(command: list[str], env: dict[str, str] | None = None, cold: Path | None = None
        ) -> tuple[float, float, float | None]:  # fmt: skip
    """(wall seconds, peak RSS in MB, in-process work seconds if printed); `cold` is evicted first."""
    quiet(OUTPUTS)
    if cold is not None:
        evict(cold)
    else:
        subprocess.run(["cat", str(SOURCE)], stdout=subprocess.DEVNULL, check=True)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # the arms' chatter, shown only when one fails
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out = process.stdout.read().decode() if process.stdout else ""
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"{command[:3]} failed:\n{errors.read().decode(errors='replace')}")
    work = json.loads(out.strip().splitlines()[-1])["work"] if out.strip() else None
    return wall, usage.ru_maxrss / 1024, work


FIXTURE = """
import shutil, sys
from pathlib import Path
from patchkit.services.fixtures import build_random_model
from patchkit.services.fixtures import synthetic_patch
folder, single, patch = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
if not single.is_file():
    shutil.rmtree(folder, ignore_errors=True)
    build_random_model("sd15", folder, dtype="fp16", single_file=single)
if not patch.is_file():
    synthetic_patch(str(folder), patch, concept="circle")
"""


OUTPUTS = Path("/tmp/patchkit-bench/outputs")
SOURCE = Path("/tmp/patchkit-bench/sd15-fp16.safetensors")


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
    global OUTPUTS, SOURCE
    OUTPUTS = args.root / "outputs"
    folder, single, patch = fixture(args.root)
    SOURCE = single
    outputs = OUTPUTS
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    cache = args.root / "digests"
    shutil.rmtree(cache, ignore_errors=True)
    python = sys.executable
    cold = {"PATCHKIT_NO_CACHE": "1"}
    warm = {"PATCHKIT_CACHE_DIR": str(cache)}
    arm = [python, "-c", PATCHKIT_ARM, str(single), str(patch)]
    run([*arm, str(outputs / "fill.safetensors"), str(folder)], warm)  # fills the digest cache
    # apply fsyncs its output before the rename (durable, not only atomic); "cp + sync" does the same
    synced = ["sh", "-c", f"cp {single} {outputs / 'cp2.safetensors'} && sync {outputs / 'cp2.safetensors'}"]
    cli = [python, "-m", "patchkit", "--quiet", "apply", str(single), str(patch), "--config", str(folder)]
    diffusers = [python, "-c", DIFFUSERS_ARM, str(single), str(patch), str(outputs / "diffusers"), str(folder)]
    copy = ["cp", str(single), str(outputs / "cp.safetensors")]
    durable_cli = [*cli, "-o", str(outputs / "cli.safetensors")]
    fast_cli = [*cli, "--no-fsync", "-o", str(outputs / "ns.safetensors")]
    # (command, environment, file to evict from the page cache first: None keeps it cached)
    arms: dict[str, tuple[list[str], dict[str, str] | None, Path | None]] = {
        "cp": (copy, None, None),
        "cp + sync": (synced, None, None),
        "patchkit apply, cold digests": ([*arm, str(outputs / "cold.safetensors"), str(folder)], cold, None),
        "patchkit apply, warm digests": ([*arm, str(outputs / "warm.safetensors"), str(folder)], warm, None),
        "`patchkit apply` CLI, warm": (durable_cli, warm, None),
        "`patchkit apply --no-fsync` CLI, warm": (fast_cli, warm, None),
        "diffusers load + fuse_lora + save": (diffusers, None, None),
        "cp, base read from disk": (copy, None, single),
        "cp + sync, base read from disk": (synced, None, single),
        "`patchkit apply` CLI, base read from disk": (durable_cli, warm, single),
        "`patchkit apply --no-fsync` CLI, base read from disk": (fast_cli, warm, single),
    }
    # the arms take turns, `repeats` rounds, and each row is its median round: a slow disk
    # moment then hits one sample of one arm, not the whole comparison
    samples: dict[str, list[tuple[float, float, float | None]]] = {label: [] for label in arms}
    for _ in range(args.repeats):
        for label, (command, env, evicted) in arms.items():
            samples[label].append(run(command, env, evicted))
    rows = {}
    for label, runs in samples.items():
        ordered = sorted(runs, key=lambda r: r[0])
        rows[label] = ordered[len(ordered) // 2]

    size = single.stat().st_size / 1e9
    print(f"SD 1.5-shaped fp16 single file, {size:.2f} GB; rank-4 attn2 to_k/to_v patch; 2 cores; "
          f"median of {args.repeats} rounds; 'base read from disk' arms evict the base from the page cache first, "
          f"the others start with it cached")  # fmt: skip
    print("| arm | wall s | work s (after imports) | peak RSS MB | wall / cp (same cache state) |")
    print("|---|---:|---:|---:|---:|")
    for label, (wall, rss, work) in rows.items():
        baseline = rows["cp, base read from disk" if arms[label][2] is not None else "cp"][0]
        shown = f"{work:.2f}" if work is not None else "–"
        print(f"| {label} | {wall:.2f} | {shown} | {rss:.0f} | {wall / baseline:.2f}x |")
    warm_work = rows["patchkit apply, warm digests"]
    cli = rows["`patchkit apply` CLI, warm"][0]
    diffusers_row = rows["diffusers load + fuse_lora + save"]
    print(f"\npatchkit apply (warm, work) vs cp: {warm_work[2] / rows['cp'][0]:.2f}x, vs cp + sync: "
          f"{warm_work[2] / rows['cp + sync'][0]:.2f}x; diffusers / patchkit CLI (wall): "
          f"{diffusers_row[0] / cli:.1f}x; (work): {diffusers_row[2] / warm_work[2]:.1f}x")  # fmt: skip
    shutil.rmtree(outputs, ignore_errors=True)


if __name__ == "__main__":
    main()
