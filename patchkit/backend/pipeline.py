"""Loading models into torch: a diffusers pipeline, or one component's tensors under diffusers names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from patchkit.io import pipeline_folder as pf
from patchkit.io.safetensors_io import LazyTensors
from patchkit.models.refs import ModelRef, family_of
from patchkit.models.weights import checked_family, configs_of

if TYPE_CHECKING:
    import torch


def _single_file_components(ref: ModelRef, configs: dict[str, dict[str, Any]]) -> dict[str, Mapping[str, torch.Tensor]]:
    from patchkit.backend import single_file

    checkpoint = LazyTensors(ref.weights)
    family = checked_family(ref, set(checkpoint), configs)
    return single_file.to_diffusers_components(checkpoint, configs, family)


def component_tensors(
    ref: ModelRef, configs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Mapping[str, torch.Tensor]]:
    """Every model component's tensors, under diffusers names."""
    configs = configs or configs_of(ref.config_folder)
    if ref.layout == "single_file":
        return _single_file_components(ref, configs)
    return {c: pf.ComponentTensors(ref.weights, c) for c in configs}


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
