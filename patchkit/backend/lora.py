"""Loading LoRA patches into a pipeline through diffusers' own loader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit.errors import InputError
from patchkit.io.safetensors_io import read_header


def load_patch(pipe: Any, path: Path, *, adapter_name: str) -> None:
    """Load `path` with `load_lora_weights`, exactly as a diffusers user would (it becomes the active adapter)."""
    read_header(path)
    try:
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
    except Exception as exc:  # diffusers raises ValueError, KeyError, RuntimeError... for foreign files
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise InputError(
            f"{path} is not a LoRA patch this model can load ({exc.__class__.__name__}: {reason})",
            hint="check that the patch was made for this base model (patchkit info shows its fingerprint)",
        ) from exc


def load_patches(pipe: Any, paths: Sequence[Path], scales: Sequence[float] | None = None) -> None:
    """Every patch as its own adapter, all active together, each at its scale (default 1): a
    stack as a diffusers user loads one."""
    for index, path in enumerate(paths):
        load_patch(pipe, path, adapter_name=f"patch{index}")
    if paths:
        names = [f"patch{i}" for i in range(len(paths))]
        pipe.set_adapters(names, adapter_weights=list(scales) if scales is not None else [1.0] * len(paths))


def unload_patches(pipe: Any) -> None:
    pipe.unload_lora_weights()
