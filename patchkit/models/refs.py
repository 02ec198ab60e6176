"""What a model reference names, without loading anything (no torch, no diffusers).

References, tried in this order:
  - "testbed": the tiny Stable Diffusion shipped inside patchkit;
  - a diffusers pipeline folder;
  - a single-file checkpoint (.safetensors; pickles only with allow_pickle), read with a
    local diffusers config folder so that nothing is fetched;
  - a Hub repo id ("org/name"), resolved through the local huggingface_hub cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from patchkit.errors import InputError, ModelMismatchError, NotCachedError, UsageError
from patchkit.io import pipeline_folder as pf
from patchkit.io.safetensors_io import looks_like_pickle, read_header, refuse_pickle
from patchkit.models.pickles import pickle_to_safetensors

Family = Literal["sd1", "sd2", "sdxl"]
Layout = Literal["folder", "single_file"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PACKAGE = Path(__file__).resolve().parent.parent
ARCHITECTURES = PACKAGE / "architectures"
FAMILY_ARCHITECTURE = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
# Models shipped inside the package, by the names a user may give them.
TESTBED_MODEL = PACKAGE / "testbed" / "assets" / "model"
TESTBED_NAMES = ("testbed", "patchkit/testbed")
TESTBED_REFERENCE = TESTBED_NAMES[0]  # what the demo and the testbed checks load


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are, and where its configs are."""

    reference: str
    source: Literal["testbed", "folder", "single_file", "hub"]
    weights: Path
    config_folder: Path
    layout: Layout


def family_of(unet_config: Mapping[str, Any]) -> Family:
    """SD family from the UNet config: added time conditioning means SDXL; linear projections SD 2."""
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if unet_config.get("use_linear_projection") or unet_config.get("cross_attention_dim") == 1024:
        return "sd2"
    return "sd1"


def family_of_single_file(keys: set[str]) -> Family:
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    raise ModelMismatchError(
        "the checkpoint holds no text encoder of SD 1.x, 2.x or XL",
        hint="patchkit reads Stable Diffusion 1.x, 2.x and XL checkpoints",
    )


def resolve(
    reference: str, *, config: Path | None = None, allow_pickle: bool = False, bundled_config: bool = False
) -> ModelRef:
    """Find what `reference` names; raise a one-line error that says how to fix it.

    With `bundled_config`, a single file without --config is described by the published
    config of its family (SD 1.5, 2.1 or XL), which fixes every key and shape; enough to
    patch weights, though not to pick a scheduler or sample size.
    """
    if reference in TESTBED_NAMES:
        return ModelRef(reference, "testbed", TESTBED_MODEL, TESTBED_MODEL, "folder")
    path = Path(reference).expanduser()
    if path.is_dir():
        pf.check_pipeline_folder(path)
        return ModelRef(reference, "folder", path, path, "folder")
    if path.is_file():
        if config is None and bundled_config and not looks_like_pickle(path):
            # published configs only (no tokenizer): enough to map keys, which is all patching needs
            family = family_of_single_file(set(read_header(path).tensors))
            return ModelRef(reference, "single_file", path, ARCHITECTURES / FAMILY_ARCHITECTURE[family], "single_file")
        if config is None:
            raise UsageError(
                f"{path} is a single-file checkpoint and needs --config, a local diffusers folder with its configs",
                hint=f"pass a pipeline folder of the same architecture: patchkit info {path} --config DIR",
            )
        pf.check_pipeline_folder(config)
        if looks_like_pickle(path):
            if not allow_pickle:
                refuse_pickle(path, allowable=True)
            path = pickle_to_safetensors(path)
        else:
            read_header(path)
        return ModelRef(reference, "single_file", path, config, "single_file")
    if _HUB_ID.match(reference) and not reference.startswith((".", "/")) and not path.suffix:
        folder = _hub_snapshot(reference)
        pf.check_pipeline_folder(folder)
        return ModelRef(reference, "hub", folder, folder, "folder")
    raise InputError(
        f"{reference}: no such file or folder",
        hint="give a pipeline folder, a .safetensors file, a cached Hub id or 'testbed'",
    )


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.txt", "*.safetensors", "tokenizer/*", "*/*.json", "*/*.safetensors"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise NotCachedError(
            f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
            hint=f"download it where the Hub is reachable: huggingface-cli download {repo_id}",
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # the Hub client raises many network error types
        raise NotCachedError(
            f"{repo_id} could not be fetched from the Hub ({exc.__class__.__name__})",
            hint="check the repo id and the network, or set HF_HUB_OFFLINE=1 and use a cached model",
        ) from exc


@dataclass(frozen=True)
class ModelSource:
    """How the user named a model, exactly as the CLI received it."""

    reference: str
    config: Path | None = None
    allow_pickle: bool = False

    def resolve(self) -> ModelRef:
        return resolve(self.reference, config=self.config, allow_pickle=self.allow_pickle)
