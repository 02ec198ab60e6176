"""Build diffusers/transformers components from plain config dicts.

This package is the only one that imports diffusers or transformers (see DESIGN.md):
everything else hands over dicts and tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def build_unet(config: dict[str, Any]) -> UNet2DConditionModel:
    return UNet2DConditionModel(**config)


def build_vae(config: dict[str, Any]) -> AutoencoderKL:
    return AutoencoderKL(**config)


def build_clip_text_model(config: dict[str, Any]) -> CLIPTextModel | CLIPTextModelWithProjection:
    settings = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    if "CLIPTextModelWithProjection" in config.get("architectures", []):
        return CLIPTextModelWithProjection(CLIPTextConfig(**settings))
    return CLIPTextModel(CLIPTextConfig(**settings))


def build_component(name: str, config: dict[str, Any], *, meta: bool = False) -> torch.nn.Module:
    """Build a pipeline component with random weights; `meta=True` allocates no memory."""
    settings = {k: v for k, v in config.items() if not k.startswith("_")}
    builders = {
        "unet": build_unet,
        "vae": build_vae,
        "text_encoder": build_clip_text_model,
        "text_encoder_2": build_clip_text_model,
    }
    if meta:
        from accelerate import init_empty_weights

        with init_empty_weights():
            empty: torch.nn.Module = builders[name](settings)
            return empty
    module: torch.nn.Module = builders[name](settings)
    return module


def save_component(module: torch.nn.Module, folder: Path) -> None:
    from patchkit.backend import quiet_libraries

    quiet_libraries()  # transformers draws its own "Writing model shards" bar on stderr, even under -q
    # every component patchkit builds is a diffusers ModelMixin or a transformers PreTrainedModel
    save: Any = module.save_pretrained
    save(str(folder), safe_serialization=True)


def load_tokenizer(folder: Path) -> CLIPTokenizer:
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(str(folder))
    return tokenizer


def build_scheduler(config: dict[str, Any]) -> DDIMScheduler:
    return DDIMScheduler(**config)


def assemble_sd_pipeline(
    *,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: DDIMScheduler,
) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(pipeline: StableDiffusionPipeline, folder: Path) -> None:
    pipeline.save_pretrained(str(folder), safe_serialization=True)


def trainable(module: ModuleT) -> ModuleT:
    module.train()
    module.requires_grad_(True)
    return module
