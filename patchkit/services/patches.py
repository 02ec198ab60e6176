"""Writing patch files: the header every patch carries, and reading a patch's tensors in the PEFT layout."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from patchkit.core import schemas
from patchkit.core.manifest import BaseRecord, ManifestError
from patchkit.core.patch_metadata import data_section_sha256, patch_header
from patchkit.io.tensors_out import save_tensors, serialize
from patchkit.models import weights


def created_at() -> str:
    """Now, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention), as ISO 8601 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).isoformat()
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def base_record(info: weights.ModelInfo, reference: str) -> BaseRecord:
    return {"family": info.family, "reference": reference, "revision": info.revision,
            "fingerprint": info.fingerprint, "dtype": info.dtype, "prediction_type": info.prediction_type}  # fmt: skip


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
        shapes={name: tuple(tensor.shape) for name, tensor in tensors.items()},
    )
    save_tensors(output, tensors, metadata=header)


def peft_tensors(path: Path, manifest: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A patch's tensors in the PEFT layout, whichever layout the file stores (its manifest says)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if manifest.get("format", {}).get("keys") == "kohya":
        from patchkit.backend.kohya import kohya_to_peft

        return kohya_to_peft(tensors)
    return tensors
