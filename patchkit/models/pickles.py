"""Pickled checkpoints (.ckpt, .bin, ...) read without running their code, re-stored as safetensors.

The converted copy lives in a temporary folder for as long as the process that needed it,
and is removed when it exits: a full copy of a model per `--allow-pickle` run would
otherwise pile up in the temp folder.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from patchkit.errors import InputError


def pickle_to_safetensors(path: Path) -> Path:
    """Load a pickle with weights_only=True (no code runs) and re-store it as safetensors."""
    import torch
    from safetensors.torch import save_file

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{path} could not be loaded safely ({exc.__class__.__name__})", hint="convert it to .safetensors"
        ) from exc
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no state dict", hint="convert it to .safetensors")
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    folder = Path(tempfile.mkdtemp(prefix="patchkit-pickle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / (path.stem + ".safetensors")
    save_file(tensors, str(out))
    return out
