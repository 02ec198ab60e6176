"""`patchkit merge` of 50 rank-4 SD 1.5 patches: concat and svd to rank 32, against the naive ways.

Run: .venv/bin/python bench/merge.py [--patches 50] [--root /tmp/patchkit-bench]

Baselines, in the same run on the same files:
- concat vs summing the 50 dense deltas module by module (what "merge" means without factors);
- svd (QR of the stacked factors, then an SVD of a 200x200 matrix) vs a full SVD of every
  dense weight-sized delta, which is what re-factoring usually does.
The SD 1.5 patch files are built once from the published config's shapes (no model needed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from patchkit.core.fusion import lora_factors
from patchkit.core.manifest import SCHEMA_VERSION
from patchkit.core.patch_id import patch_id_of
from patchkit.services.merge import merge
from patchkit.services.patches import write_patch

ARCHITECTURES = Path(__file__).resolve().parents[1] / "patchkit" / "architectures"


def sd15_cross_attention_shapes() -> dict[str, tuple[int, int]]:
    """attn2.to_k / to_v weight shapes of SD 1.5, from its published UNet config."""
    config = json.loads((ARCHITECTURES / "sd15" / "unet" / "config.json").read_text())
    widths, context = config["block_out_channels"], config["cross_attention_dim"]
    layers = config["layers_per_block"]
    modules = []
    for b, width in enumerate(widths[:-1]):
        modules += [(f"down_blocks.{b}.attentions.{j}", width) for j in range(layers)]
    modules.append(("mid_block.attentions.0", widths[-1]))
    for b, width in enumerate(reversed(widths[:-1]), start=1):
        modules += [(f"up_blocks.{b}.attentions.{j}", width) for j in range(layers + 1)]
    return {f"{m}.transformer_blocks.0.attn2.to_{p}": (w, context) for m, w in modules for p in "kv"}


def build(root: Path, count: int) -> list[Path]:
    shapes = sd15_cross_attention_shapes()
    paths = []
    for i in range(count):
        path = root / f"sd15-patch-{i:02d}.safetensors"
        paths.append(path)
        if path.is_file():
            continue
        g = torch.Generator().manual_seed(i)
        tensors = {}
        for module, (out, inner) in shapes.items():
            tensors[f"unet.{module}.lora_A.weight"] = torch.randn(4, inner, generator=g) * 0.01
            tensors[f"unet.{module}.lora_B.weight"] = torch.randn(out, 4, generator=g) * 0.01
        manifest = {
            "schema_version": SCHEMA_VERSION, "patch_id": patch_id_of(tensors), "name": f"bench-{i:02d}",
            "version": "1.0.0",
            "base": {"family": "sd1", "reference": "sd15", "revision": None, "fingerprint": "0" * 64,
                     "dtype": "float16"},
            "concepts": [{"name": f"concept {i}", "category": "object", "action": "forget", "token": f"concept {i}"}],
            "method": {"name": "import", "settings": {"source": "random"}},
            "format": {"keys": "peft", "rank": 4, "modules": ["attn2.to_k", "attn2.to_v"]},
            "created_at": "2026-01-01T00:00:00+00:00", "tool": "patchkit bench",
        }  # fmt: skip
        write_patch(path, tensors, manifest, family="sd1", rank=4, resolution=512, base_name="sd15")
    return paths


def dense_sum(paths: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for factor in lora_factors(load_file(str(path))):
            delta = torch.from_numpy(factor.delta())
            total[factor.module] = total[factor.module] + delta if factor.module in total else delta
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=50)
    parser.add_argument("--root", type=Path, default=Path("/tmp/patchkit-bench"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = args.root / "merge"
    folder.mkdir(parents=True, exist_ok=True)
    paths = build(folder, args.patches)
    rows = []

    start = time.perf_counter()
    concat = merge(paths, folder / "concat.safetensors", force=True)
    rows.append(("patchkit merge --method concat", time.perf_counter() - start, f"rank {concat.rank}, exact"))
    start = time.perf_counter()
    dense = dense_sum(paths)
    rows.append(("baseline: sum of dense deltas", time.perf_counter() - start, "weight-sized deltas, no file"))

    start = time.perf_counter()
    svd = merge(paths, folder / "svd.safetensors", method="svd", rank=32, force=True)
    rows.append(("patchkit merge --method svd --rank 32", time.perf_counter() - start,
                 f"overall error {svd.overall_error:.2%}"))  # fmt: skip
    start = time.perf_counter()
    for delta in dense.values():
        torch.linalg.svd(delta.double(), full_matrices=False)
    rows.append(("baseline: full SVD of each dense delta", time.perf_counter() - start, "factorisation only"))

    print(f"{args.patches} rank-4 SD 1.5 cross-attention patches ({len(sd15_cross_attention_shapes())} modules each),"
          f" 2 threads")  # fmt: skip
    print("| arm | seconds | notes |")
    print("|---|---:|---|")
    for label, seconds, note in rows:
        print(f"| {label} | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
