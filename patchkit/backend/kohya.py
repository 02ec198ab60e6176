"""Converting LoRA key layouts between PEFT (diffusers) and kohya-ss (A1111, ComfyUI), with diffusers' converters."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch


def peft_to_kohya(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`lora_unet_<module>.lora_down/lora_up.weight` and a float `.alpha` equal to the rank (scale 1)."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    converted = convert_state_dict_to_kohya(dict(tensors))
    return {k: (v.float().reshape(()) if k.endswith(".alpha") else v.contiguous()) for k, v in converted.items()}


def kohya_to_peft(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT keys, with each module's alpha / rank folded into lora_B so that the delta is unchanged."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    def peft_names(keys: Mapping[str, object]) -> dict[str, str]:
        converted = convert_unet_state_dict_to_peft({k: k for k in keys})
        return {old: new.replace(".processor.", ".") for new, old in converted.items()}

    state, alphas = _convert_non_diffusers_lora_to_diffusers(dict(tensors))
    names = peft_names(state)
    out = {names[k]: v.contiguous() for k, v in state.items()}
    alpha_names = peft_names({k.removesuffix(".alpha"): None for k in alphas})
    for old, alpha in alphas.items():
        module = re.sub(r"\.lora_[AB]\.weight$", "", alpha_names[old.removesuffix(".alpha")])
        up, down = out.get(f"{module}.lora_B.weight"), out.get(f"{module}.lora_A.weight")
        if up is not None and down is not None:
            out[f"{module}.lora_B.weight"] = (up.float() * (float(alpha) / down.shape[0])).to(up.dtype).contiguous()
    unknown = [k for k in out if not re.fullmatch(r".+\.lora_[AB]\.weight", k)]
    if unknown:
        raise ValueError(f"kohya key {unknown[0]!r} has no PEFT equivalent")
    return out
