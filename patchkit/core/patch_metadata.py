"""The safetensors header of a patch: patchkit manifest, ModelSpec 1.0.1 and kohya `ss_*` keys."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from patchkit import __version__
from patchkit.core.canonical import canonical_json
from patchkit.core.manifest import MANIFEST_KEY

# The header key diffusers' load_lora_weights reads the adapter's LoraConfig from (diffusers >= 0.34).
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"

# ModelSpec 1.0.1 architecture ids, and kohya sd-scripts' ss_base_model_version, per (family, v-prediction):
# A1111 files a LoRA under SD 1 or SD 2 by ss_v2 / ss_base_model_version, and hides the other family's
ARCHITECTURE = {
    ("sd1", False): "stable-diffusion-v1",
    ("sd2", False): "stable-diffusion-v2-512",
    ("sd2", True): "stable-diffusion-v2-768-v",
    ("sdxl", False): "stable-diffusion-xl-v1-base",
}
SS_BASE = {
    ("sd1", False): "sd_v1",
    ("sd2", False): "sd_v2",
    ("sd2", True): "sd_v2_v",
    ("sdxl", False): "sdxl_base_v1-0",
}


def family_labels(family: str, prediction_type: str) -> tuple[str, str]:
    """(ModelSpec architecture of a LoRA, kohya base version) for a base of `family` and `prediction_type`."""
    key = (family, prediction_type == "v_prediction")
    if key not in ARCHITECTURE:  # v-prediction SD 1.x / SDXL bases exist but have no id: say the family
        key = (family, False)
    return f"{ARCHITECTURE[key]}/lora", SS_BASE[key]


def data_section_sha256(serialized: bytes) -> str:
    """ModelSpec's hash_sha256: "0x" + SHA-256 of the tensor bytes, the header excluded."""
    (header_length,) = struct.unpack("<Q", serialized[:8])
    return "0x" + hashlib.sha256(serialized[8 + header_length :]).hexdigest()


def patch_header(manifest: dict[str, Any], *, family: str, title: str, rank: int, resolution: int, created: str,
                 data_hash: str, base_name: str, shapes: Mapping[str, Sequence[int]]) -> dict[str, str]:  # fmt: skip
    """Every header entry as a string, as safetensors requires.

    Only what is true of this file: the author and license the manifest records, the base by
    its file name (not a local path), no kohya model hash (kohya means the base file's
    SHA-256, which patchkit does not compute; its own fingerprint is in the manifest), and
    `ss_network_module` only in the kohya layout, the one that module reads, and diffusers'
    `lora_adapter_metadata` only in the PEFT layout, the one diffusers reads it with.
    """
    base = manifest["base"]
    prediction = base.get("prediction_type", "epsilon")
    architecture, ss_base = family_labels(family, prediction)
    header = {
        "format": "pt",
        MANIFEST_KEY: canonical_json(manifest),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.description": manifest.get("description") or _description(manifest),
        "modelspec.date": created,
        "modelspec.hash_sha256": data_hash,
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
        "modelspec.tags": "patchkit,forget-me-not,concept-removal",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank),
        "ss_base_model_version": ss_base,
        "ss_v2": str(family == "sd2"),
        "ss_sd_model_name": base_display_name(base_name, hub=base.get("revision") is not None),
        "ss_output_name": title,
        "patchkit.version": __version__,
    }
    if manifest.get("author"):
        header["modelspec.author"] = str(manifest["author"])
    if manifest.get("license"):
        header["modelspec.license"] = str(manifest["license"])
    if manifest.get("format", {}).get("keys") == "kohya":
        header["ss_network_module"] = "networks.lora"
    elif adapter := lora_adapter_metadata(shapes):
        header[LORA_ADAPTER_METADATA_KEY] = adapter
    return header


def lora_adapter_metadata(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """diffusers' `lora_adapter_metadata`: each component's PEFT LoraConfig, keys prefixed by it.

    `load_lora_weights` builds the adapter from this instead of guessing from the shapes: the
    rank, an alpha equal to it (the scale of 1 patchkit's deltas are made for), the exact
    modules, and a `rank_pattern` where a module's rank differs (a merged patch)."""
    ranks: dict[str, dict[str, int]] = {}
    for name, shape in shapes.items():
        if name.endswith(".lora_A.weight") and "." in name and shape:
            component, module = name.removesuffix(".lora_A.weight").split(".", 1)
            ranks.setdefault(component, {})[module] = int(shape[0])
    if not ranks:
        return None
    packed: dict[str, Any] = {}
    for component, modules in sorted(ranks.items()):
        counts = Counter(modules.values())
        rank = max(counts, key=lambda r: (counts[r], r))
        config = {"r": rank, "lora_alpha": rank, "target_modules": sorted(modules),
                  "rank_pattern": {m: r for m, r in sorted(modules.items()) if r != rank},
                  "alpha_pattern": {m: r for m, r in sorted(modules.items()) if r != rank}}  # fmt: skip
        packed.update({f"{component}.{key}": value for key, value in config.items()})
    return json.dumps(packed, indent=2, sort_keys=True)


def _description(manifest: dict[str, Any]) -> str:
    """What the patch does, in words, when its author wrote none."""
    parts = []
    for concept in manifest.get("concepts", []):
        if concept.get("action") == "correct" and concept.get("target"):
            parts.append(f"corrects {concept['name']} to {concept['target']}")
        else:
            parts.append(f"removes {concept['name']} ({concept.get('category', 'concept')})")
    return f"patchkit patch: {', '.join(parts)}" if parts else "patchkit patch"


def base_display_name(reference: str, *, hub: bool) -> str:
    """A base as kohya tools show it: a Hub id as given, else the file or folder name, never a
    local path (`fx/sd21-tiny` may be a folder: only a base resolved from the Hub is a Hub id)."""
    if hub:
        return reference
    return reference.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
