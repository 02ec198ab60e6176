"""Turn a model reference into a description (no weights built) or a loaded pipeline.

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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from patchkit.core.fingerprint import Leaf, combine
from patchkit.errors import InputError, ModelMismatchError, NotCachedError, UsageError
from patchkit.io import pipeline_folder as pf
from patchkit.io.digests import DigestCache, Progress, model_leaves
from patchkit.io.safetensors_io import LazyTensors, looks_like_pickle, read_header, refuse_pickle
from patchkit.io.tensor_spans import TORCH_NAMES, ModelSpans, SpanReader, folder_spans, single_file_spans
from patchkit.store.locations import digest_cache_dir
from patchkit.testbed.paths import TESTBED_MODEL, TESTBED_NAMES

if TYPE_CHECKING:  # torch is imported where tensors are made: apply and info never need it
    import torch

Family = Literal["sd1", "sd2", "sdxl"]
Layout = Literal["folder", "single_file"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ARCHITECTURES = Path(__file__).resolve().parent.parent / "architectures"
FAMILY_ARCHITECTURE = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are, and where its configs are."""

    reference: str
    source: Literal["testbed", "folder", "single_file", "hub"]
    weights: Path
    config_folder: Path
    layout: Layout


@dataclass(frozen=True)
class ModelInfo:
    reference: str
    source: str
    layout: Layout
    weights: Path
    family: Family
    dtype: str
    fingerprint: str
    configs: dict[str, dict[str, Any]] = field(repr=False)

    @property
    def resolution(self) -> int:
        """Native image size in pixels: the UNet's latent size times the VAE's downsampling."""
        vae_levels = len(self.configs.get("vae", {}).get("block_out_channels", [0, 0, 0, 0]))
        return int(self.configs["unet"]["sample_size"]) * int(2 ** (vae_levels - 1))

    @property
    def revision(self) -> str | None:
        """The Hub commit of a cached model (its snapshot folder), else None."""
        if self.source != "hub":
            return None
        parts = self.weights.parts
        return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None

    def summary(self) -> dict[str, Any]:
        unet = self.configs["unet"]
        return {
            "reference": self.reference,
            "source": self.source,
            "layout": self.layout,
            "path": str(self.weights),
            "family": self.family,
            "dtype": self.dtype,
            "fingerprint": self.fingerprint,
            "cross_attention_dim": unet.get("cross_attention_dim"),
            "sample_size": unet.get("sample_size"),
            "components": sorted(self.configs),
        }


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
                refuse_pickle(path)
            path = _pickle_to_safetensors(path)
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


def _pickle_to_safetensors(path: Path) -> Path:
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
    out = Path(tempfile.mkdtemp(prefix="patchkit-pickle-")) / (path.stem + ".safetensors")
    save_file(tensors, str(out))
    return out


def _configs(folder: Path) -> dict[str, dict[str, Any]]:
    return {c: pf.component_config(folder, c) for c in pf.present_components(folder)}


def _checked_family(ref: ModelRef, keys: set[str], configs: dict[str, dict[str, Any]]) -> Family:
    family = family_of_single_file(keys)
    expected = family_of(configs["unet"])
    if family != expected:
        raise ModelMismatchError(
            f"{ref.weights} is an {family} checkpoint but --config {ref.config_folder} describes {expected}",
            hint="pass a config folder of the same architecture as the checkpoint",
        )
    return family


def _single_file_components(ref: ModelRef, configs: dict[str, dict[str, Any]]) -> dict[str, Mapping[str, torch.Tensor]]:
    from patchkit.backend import single_file

    checkpoint = LazyTensors(ref.weights)
    family = _checked_family(ref, set(checkpoint), configs)
    return single_file.to_diffusers_components(checkpoint, configs, family)


def component_tensors(
    ref: ModelRef, configs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Mapping[str, torch.Tensor]]:
    """Every model component's tensors, under diffusers names."""
    configs = configs or _configs(ref.config_folder)
    if ref.layout == "single_file":
        return _single_file_components(ref, configs)
    return {c: pf.ComponentTensors(ref.weights, c) for c in configs}


def model_spans(ref: ModelRef, configs: dict[str, dict[str, Any]] | None = None) -> ModelSpans:
    """Where every hashed tensor of `ref` lies on disk, under diffusers names; nothing is loaded."""
    if ref.layout == "folder":
        return folder_spans(ref.weights)
    configs = configs or _configs(ref.config_folder)
    header = read_header(ref.weights)
    family = _checked_family(ref, set(header.tensors), configs)
    return single_file_spans(ref.weights, header, configs, family)


def leaves(spans: ModelSpans, progress: Progress | None = None) -> list[Leaf]:
    """Each hashed tensor's digest, in parallel and from the digest cache where fresh."""
    with SpanReader() as reader:
        return model_leaves(spans, reader, DigestCache(digest_cache_dir()), progress)


def describe(ref: ModelRef, progress: Progress | None = None) -> ModelInfo:
    configs = _configs(ref.config_folder)
    spans = model_spans(ref, configs)
    unet = spans["unet"]
    return ModelInfo(
        reference=ref.reference,
        source=ref.source,
        layout=ref.layout,
        weights=ref.weights,
        family=family_of(configs["unet"]),
        dtype=TORCH_NAMES[unet[min(unet)].dtype],
        fingerprint=combine(leaves(spans, progress)),
        configs=configs,
    )


def load_pipeline(ref: ModelRef, *, dtype: torch.dtype | None = None) -> Any:
    """A ready diffusers pipeline for `ref` (float32 unless told), on CPU, never touching the network."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from patchkit.backend import quiet_libraries

    quiet_libraries()
    dtype = dtype or torch.float32
    family = family_of(pf.component_config(ref.config_folder, "unet"))
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra: dict[str, Any] = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    if ref.layout == "folder":
        pipe = cls.from_pretrained(str(ref.weights), dtype=dtype, local_files_only=True, **extra)
    else:
        pipe = cls.from_single_file(
            str(ref.weights), config=str(ref.config_folder), local_files_only=True, dtype=dtype, **extra
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
