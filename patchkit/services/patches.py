"""Writing patch files: the header every patch carries, and synthetic patches for benches and tests."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from patchkit import __version__
from patchkit.backend import loading
from patchkit.core import schemas
from patchkit.core.manifest import SCHEMA_VERSION, ManifestError
from patchkit.core.patch_id import patch_id_of
from patchkit.core.patch_metadata import data_section_sha256, patch_header
from patchkit.io.atomic import check_output_path
from patchkit.io.tensors_out import save_tensors, serialize

CROSS_ATTENTION = re.compile(r".*\.attn2\.to_[kv]\.weight")


def created_at() -> str:
    """Now, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention), as ISO 8601 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).isoformat()
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def base_record(info: loading.ModelInfo, reference: str) -> dict[str, Any]:
    return {"family": info.family, "reference": reference, "revision": info.revision,
            "fingerprint": info.fingerprint, "dtype": info.dtype}  # fmt: skip


def write_patch(
    output: Path, tensors: Mapping[str, Any], manifest: dict[str, Any], *, family: str, rank: int, resolution: int,
    base_name: str,
) -> None:  # fmt: skip
    """Validate the manifest, then write tensors and header atomically."""
    schemas.validate(manifest, "manifest", "the new patch's manifest", ManifestError)
    header = patch_header(
        manifest,
        family=family,
        title=manifest["name"],
        rank=rank,
        resolution=resolution,
        created=manifest["created_at"],
        data_hash=data_section_sha256(serialize(tensors)),
        base_name=base_name,
        base_fingerprint=manifest["base"]["fingerprint"],
    )
    save_tensors(output, tensors, metadata=header)


def synthetic_patch(
    base: str, output: Path, *, concept: str, category: str = "object", seed: int = 0, rank: int = 4,
    magnitude: float = 0.01, info: loading.ModelInfo | None = None, force: bool = False,
) -> Path:  # fmt: skip
    """A random rank-`rank` cross-attention patch for `base`, with a valid manifest (method "import").

    For benches and tests that need many real patch files without training each one.
    """
    check_output_path(output, force=force)
    ref = loading.resolve(base, bundled_config=True)
    info = info or loading.describe(ref)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, span in sorted(loading.model_spans(ref)["unet"].items()):
        if CROSS_ATTENTION.fullmatch(key):
            module = key.removesuffix(".weight")
            out_features, in_features = span.shape
            tensors[f"unet.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * magnitude
            tensors[f"unet.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * magnitude
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "patch_id": patch_id_of(tensors),
        "name": f"synthetic-{concept.replace(' ', '-')}",
        "version": "0.0.1",
        "base": base_record(info, base),
        "concepts": [{"name": concept, "category": category, "action": "forget", "token": concept}],
        "method": {"name": "import", "seed": seed, "settings": {"source": "random", "magnitude": magnitude}},
        "format": {"keys": "peft", "rank": rank, "modules": ["attn2.to_k", "attn2.to_v"]},
        "created_at": created_at(),
        "tool": f"patchkit {__version__}",
    }
    write_patch(output, tensors, manifest, family=info.family, rank=rank, resolution=info.resolution, base_name=base)
    return output


def peft_tensors(path: Path, manifest: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A patch's tensors in the PEFT layout, whichever layout the file stores (its manifest says)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if manifest.get("format", {}).get("keys") == "kohya":
        from patchkit.backend.kohya import kohya_to_peft

        return kohya_to_peft(tensors)
    return tensors
