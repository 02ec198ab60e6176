"""The safetensors header of a patch: patchkit manifest, ModelSpec 1.0.1 and kohya `ss_*` keys."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from patchkit import __version__
from patchkit.core.canonical import canonical_json
from patchkit.core.manifest import MANIFEST_KEY

ARCHITECTURE = {
    "sd1": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2-512/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
}
SS_BASE = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def data_section_sha256(serialized: bytes) -> str:
    """ModelSpec's hash_sha256: "0x" + SHA-256 of the tensor bytes, the header excluded."""
    (header_length,) = struct.unpack("<Q", serialized[:8])
    return "0x" + hashlib.sha256(serialized[8 + header_length :]).hexdigest()


def patch_header(manifest: dict[str, Any], *, family: str, title: str, rank: int, resolution: int, created: str,
                 data_hash: str, base_name: str, base_fingerprint: str) -> dict[str, str]:  # fmt: skip
    """Every header entry as a string, as safetensors requires."""
    return {
        "format": "pt",
        MANIFEST_KEY: canonical_json(manifest),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": ARCHITECTURE[family],
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.description": manifest.get("description", ""),
        "modelspec.date": created,
        "modelspec.hash_sha256": data_hash,
        "modelspec.tags": "patchkit,forget-me-not,concept-removal",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank),
        "ss_base_model_version": SS_BASE[family],
        "ss_sd_model_name": base_name,
        "ss_new_sd_model_hash": base_fingerprint,
        "ss_output_name": title,
        "patchkit.version": __version__,
    }
