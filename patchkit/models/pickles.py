"""Pickled checkpoints (.ckpt, .bin, ...) read without running their code, re-stored as safetensors.

The converted copy lives in a temporary folder for as long as the process that needed it,
and is removed when it exits: a full copy of a model per `--allow-pickle` run would
otherwise pile up in the temp folder. A process killed before it could clean up (SIGKILL,
a power cut) leaves its folder behind, named with its pid: the next conversion removes the
folders of processes that are gone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from patchkit.errors import InputError
from patchkit.io.dead_writers import pid_alive

_PREFIX = "patchkit-pickle-"


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
    sweep_dead_conversions(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / (path.stem + ".safetensors")
    save_file(tensors, str(out))
    return out


def sweep_dead_conversions(temp: Path) -> list[Path]:
    """Remove the conversion folders that killed processes left in `temp`; return them."""
    removed = []
    for folder in temp.glob(f"{_PREFIX}*-*"):
        pid = folder.name.removeprefix(_PREFIX).split("-", 1)[0]
        if folder.is_dir() and not folder.is_symlink() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
