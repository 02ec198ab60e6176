"""The two key layouts of one patch, and how their files are named side by side.

PEFT (`unet.<module>.lora_A.weight`) is what diffusers loads; kohya (`lora_unet_<module>
.lora_down.weight` + `.alpha`) is what A1111 and ComfyUI load. One patch id covers both
(core/patch_id.py), so a registry entry, a push and an export carry both files under one name:
NAME.safetensors for PEFT, NAME.kohya.safetensors for kohya.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, TypeVar

_P = TypeVar("_P", bound=PurePath)

LAYOUTS = ("peft", "kohya")
READERS = {"peft": "diffusers (load_lora_weights), PEFT and patchkit",
           "kohya": "A1111, ComfyUI, kohya sd-scripts, diffusers and patchkit"}  # fmt: skip
_SUFFIX = {"peft": ".safetensors", "kohya": ".kohya.safetensors"}


def layout_of(manifest: dict[str, Any]) -> str:
    return str(manifest.get("format", {}).get("keys", "peft"))


def file_name(stem: str, layout: str) -> str:
    """`no-circle` -> `no-circle.safetensors` (PEFT) or `no-circle.kohya.safetensors` (kohya)."""
    return stem + _SUFFIX[layout]


def kohya_sibling(path: _P) -> _P:
    """Where the kohya layout of the patch at `path` sits: `p.safetensors` -> `p.kohya.safetensors`."""
    return path.with_name(file_name(path.name.removesuffix(".safetensors"), "kohya"))


def is_kohya_file_name(name: str) -> bool:
    return name.endswith(_SUFFIX["kohya"])
