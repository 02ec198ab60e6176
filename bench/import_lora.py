"""`patchkit import` at full size: an ESD/UCE-style edited SD 1.5 UNet, and a kohya LoRA.

Run: .venv/bin/python bench/import_lora.py [--root /tmp/patchkit-bench] [--rank 8]

Each arm runs in its own process (wall time and peak RSS of that process), on the same
files, in the same run:
- `patchkit import EDITED.safetensors` (the edited weights: the difference from the base,
  factored by truncated SVD of the changed modules only) against the naive extraction a
  short script does: load both whole state dicts, take every 2-D difference, SVD it;
- `patchkit import LORA.kohya.safetensors` against diffusers' own reading of the same file
  (`StableDiffusionPipeline.lora_state_dict`), which converts the keys but binds nothing.
The base is a random-weight SD 1.5 in fp16 built from its published config (no download).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

NAIVE = """
import sys, torch
from safetensors.torch import load_file
base, edited, rank = load_file(sys.argv[1]), load_file(sys.argv[2]), int(sys.argv[3])
factors = {}
for key, value in edited.items():
    if value.ndim == 2:
        delta = value.float() - base[key].float()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        factors[key] = (u[:, :rank] * s[:rank], vh[:rank])
print(len(factors))
"""

DIFFUSERS = """
import sys
from diffusers import StableDiffusionPipeline
state, alphas = StableDiffusionPipeline.lora_state_dict(sys.argv[1])
print(len(state))
"""


def build(root: Path, rank: int) -> tuple[Path, Path, Path]:
    import torch
    from safetensors.torch import load_file, save_file

    from patchkit.models.refs import ModelSource
    from patchkit.services.export import export
    from patchkit.services.fixtures import build_random_model
    from patchkit.services.import_lora import ImportRequest, import_lora

    base = root / "sd15-fp16"
    if not (base / "model_index.json").is_file():
        build_random_model("sd15", base, dtype="fp16")
    edited_path = root / "esd-sd15.safetensors"
    if not edited_path.is_file():
        unet = load_file(str(next((base / "unet").glob("*.safetensors"))))
        g = torch.Generator().manual_seed(0)
        for key, value in unet.items():
            if key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
                delta = torch.randn(value.shape[0], rank, generator=g) @ torch.randn(rank, value.shape[1], generator=g)
                unet[key] = (value.float() + 1e-3 * delta).to(value.dtype)
        save_file(unet, str(edited_path))
    kohya = root / "lora.kohya.safetensors"
    if not kohya.is_file():
        request = ImportRequest(source=edited_path, model=ModelSource(str(base)), concepts=["x"], category="object",
                                output=root / "lora.safetensors", rank=rank, force=True)  # fmt: skip
        import_lora(request)
        export(root / "lora.safetensors", "kohya", kohya, force=True)
    return base, edited_path, kohya


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/patchkit-bench/import"))
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    base, edited, kohya = build(args.root, args.rank)
    unet = next((base / "unet").glob("*.safetensors"))
    cli = [sys.executable, "-m", "patchkit", "-q", "import"]
    common = ["--base", str(base), "-c", "x", "--category", "object", "--no-kohya", "--overwrite"]
    a, b = str(args.root / "a.safetensors"), str(args.root / "b.safetensors")
    naive = [sys.executable, "-c", NAIVE, str(unet), str(edited), str(args.rank)]
    arms = [
        ("patchkit import (edited weights, auto rank)", [*cli, str(edited), *common, "-o", a]),
        ("baseline: load both, SVD every 2-D difference", naive),
        ("patchkit import (kohya LoRA)", [*cli, str(kohya), *common, "-o", b]),
        ("baseline: diffusers lora_state_dict", [sys.executable, "-c", DIFFUSERS, str(kohya)]),
    ]
    rows = []
    for label, command in arms:
        # RUSAGE_CHILDREN keeps the largest child ever waited for: each arm runs under its own wrapper process,
        # which reports the wall time and peak RSS of that one child
        wrapper = [
            sys.executable,
            "-c",
            "import resource,subprocess,sys,time; s=time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(time.perf_counter()-s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            *command,
        ]
        done = subprocess.run(wrapper, check=True, capture_output=True, text=True)
        seconds, kib = done.stdout.split()
        rows.append((label, float(seconds), int(kib) / 1024**2))
    result = json.loads(subprocess.run([*cli[:-2], "show", str(args.root / "a.safetensors"), "--json"],
                                       check=True, capture_output=True, text=True).stdout)  # fmt: skip
    fit = result["method"]["settings"]
    print(f"SD 1.5 at full size (fp16, random weights), 32 cross-attention modules edited at rank {args.rank}; "
          f"import chose rank {fit['svd_rank']}, error {fit['svd_error']:.2e}; 2 threads")  # fmt: skip
    print("| arm | seconds | peak RSS (GB) |")
    print("|---|---:|---:|")
    for label, seconds, peak in rows:
        print(f"| {label} | {seconds:.1f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
