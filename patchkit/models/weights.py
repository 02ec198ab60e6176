"""A model's weights as patchkit sees them: family, dtype, tensor spans on disk and the fingerprint.

Nothing here imports torch or diffusers: spans are read from safetensors headers, digests
from the bytes, so `info`, `apply` and `stack` stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit.core.fingerprint import Leaf, combine
from patchkit.core.progress import Progress
from patchkit.errors import ModelMismatchError
from patchkit.io import pipeline_folder as pf
from patchkit.io.digests import DigestCache, model_leaves
from patchkit.io.safetensors_io import read_header
from patchkit.io.tensor_spans import TORCH_NAMES, ModelSpans, SpanReader, folder_spans, single_file_spans
from patchkit.models.refs import Family, Layout, ModelRef, family_of, family_of_single_file
from patchkit.store.locations import digest_cache_dir


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
    prediction_type: str = "epsilon"  # the scheduler's: ModelSpec and kohya tell SD 2.x-768-v apart by it

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


def configs_of(folder: Path) -> dict[str, dict[str, Any]]:
    return {c: pf.component_config(folder, c) for c in pf.present_components(folder)}


def checked_family(ref: ModelRef, keys: set[str], configs: dict[str, dict[str, Any]]) -> Family:
    family = family_of_single_file(keys)
    expected = family_of(configs["unet"])
    if family != expected:
        raise ModelMismatchError(
            f"{ref.weights} is an {family} checkpoint but --config {ref.config_folder} describes {expected}",
            hint="pass a config folder of the same architecture as the checkpoint",
        )
    return family


def model_spans(ref: ModelRef, configs: dict[str, dict[str, Any]] | None = None) -> ModelSpans:
    """Where every hashed tensor of `ref` lies on disk, under diffusers names; nothing is loaded."""
    if ref.layout == "folder":
        return folder_spans(ref.weights)
    configs = configs or configs_of(ref.config_folder)
    header = read_header(ref.weights)
    family = checked_family(ref, set(header.tensors), configs)
    return single_file_spans(ref.weights, header, configs, family)


def leaves(spans: ModelSpans, progress: Progress | None = None, stage: str = "fingerprint") -> list[Leaf]:
    """Each hashed tensor's digest, in parallel and from the digest cache where fresh."""
    with SpanReader() as reader:
        return model_leaves(spans, reader, DigestCache(digest_cache_dir()), progress, stage)


def fingerprint_of(spans: ModelSpans, progress: Progress | None = None, stage: str = "fingerprint") -> str:
    """The base fingerprint of the tensors at `spans` (docs/fingerprint.md)."""
    return combine(leaves(spans, progress, stage))


def describe(ref: ModelRef, progress: Progress | None = None) -> ModelInfo:
    configs = configs_of(ref.config_folder)
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
        prediction_type=pf.prediction_type(ref.config_folder),
    )
