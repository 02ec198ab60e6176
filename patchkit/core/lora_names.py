"""Kohya LoRA tensor names mapped back to the PEFT (diffusers) names they were made from.

PEFT names a factor `unet.<module path>.lora_A.weight`; the kohya layout that A1111 and
ComfyUI read flattens the same module path with underscores, `lora_unet_<module_path>
.lora_down.weight`, and adds `<module>.alpha`. Flattening loses which underscores were dots,
so going back needs the names of the parts: diffusers' UNet and CLIP modules are built from a
small, fixed vocabulary of words that hold an underscore themselves (`down_blocks`, `to_out`,
`self_attn`, ...), and every other underscore was a dot. A name outside that vocabulary still
maps to one deterministic name, so a layout-independent patch id stays well defined for it;
it just will not equal a PEFT file's.
"""

from __future__ import annotations

import re

# Module-path words that contain an underscore, in diffusers' UNet2DConditionModel and
# transformers' CLIPTextModel(WithProjection): longest first, so `time_emb_proj` wins over `time`.
_VOCABULARY = """
    down_blocks up_blocks mid_block transformer_blocks to_k to_q to_v to_out proj_in proj_out
    time_emb_proj conv_shortcut conv_in conv_out conv_norm_out time_embedding linear_1 linear_2
    add_embedding class_embedding encoder_hid_proj add_k_proj add_v_proj add_q_proj to_add_out
    text_model self_attn q_proj k_proj v_proj out_proj final_layer_norm layer_norm1 layer_norm2
    position_embedding token_embedding text_projection norm_out
"""
_COMPOUNDS = sorted(set(_VOCABULARY.split()), key=lambda word: (-word.count("_"), word))
_PREFIXES = {"lora_unet_": "unet.", "lora_te1_": "text_encoder.", "lora_te_": "text_encoder.",
             "lora_te2_": "text_encoder_2."}  # fmt: skip
_FACTORS = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight"}
_KOHYA = re.compile(r"(?P<prefix>lora_(?:unet|te1|te2|te)_)(?P<module>[^.]+)\.(?P<suffix>.+)")


def dotted_module(flat: str) -> str:
    """`down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0` -> `down_blocks.0....to_out.0`."""
    words = flat.split("_")
    parts: list[str] = []
    i = 0
    while i < len(words):
        for compound in _COMPOUNDS:
            n = compound.count("_") + 1
            if "_".join(words[i : i + n]) == compound:
                parts.append(compound)
                i += n
                break
        else:
            parts.append(words[i])
            i += 1
    return ".".join(parts)


def is_kohya_name(name: str) -> bool:
    return _KOHYA.fullmatch(name) is not None


def kohya_module(name: str) -> str | None:
    """The PEFT module a kohya tensor name belongs to (`unet.down_blocks....attn2.to_k`), or None."""
    match = _KOHYA.fullmatch(name)
    if match is None:
        return None
    return _PREFIXES[match["prefix"]] + dotted_module(match["module"])


def peft_name(name: str) -> str:
    """The PEFT name of a kohya factor (`.lora_down.weight` -> `.lora_A.weight`); other names unchanged."""
    match = _KOHYA.fullmatch(name)
    if match is None:
        return name
    suffix = _FACTORS.get(match["suffix"], match["suffix"])
    return f"{kohya_module(name)}.{suffix}"
