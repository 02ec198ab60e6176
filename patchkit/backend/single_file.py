"""Read single-file (LDM layout) checkpoints into diffusers-named state dicts.

diffusers' own converters are the reference for how a single file maps to diffusers
names, so we call them rather than keep a second copy of that mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)

from patchkit.core.ldm_layout import OPENCLIP_COMPONENTS, TEXT_ENCODER_PREFIXES


def _text_encoder(
    checkpoint: Mapping[str, torch.Tensor], family: str, name: str, config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    prefix = TEXT_ENCODER_PREFIXES[(family, name)]
    if (family, name) in OPENCLIP_COMPONENTS:
        model = SimpleNamespace(config=SimpleNamespace(hidden_size=config["hidden_size"]))
        converted: dict[str, torch.Tensor] = convert_open_clip_checkpoint(model, checkpoint, prefix=prefix)
        return converted
    only_this = {k: checkpoint[k] for k in checkpoint if k.startswith(prefix)}
    converted = convert_ldm_clip_checkpoint(only_this, remove_prefix=prefix)
    return converted


def to_diffusers_components(
    checkpoint: Mapping[str, torch.Tensor], configs: Mapping[str, dict[str, Any]], family: str
) -> dict[str, Mapping[str, torch.Tensor]]:
    components: dict[str, Mapping[str, torch.Tensor]] = {
        "unet": convert_ldm_unet_checkpoint(checkpoint, configs["unet"]),
        "vae": convert_ldm_vae_checkpoint(checkpoint, configs["vae"]),
    }
    for name in ("text_encoder", "text_encoder_2"):
        if name in configs:
            components[name] = _text_encoder(checkpoint, family, name, configs[name])
    return components
