"""Loading LoRA patches into a pipeline through diffusers' own loader."""

from __future__ import annotations

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


def unload_patches(pipe: Any) -> None:
    pipe.unload_lora_weights()
