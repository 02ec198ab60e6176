"""Key layout of single-file (A1111 / civitai / original LDM) checkpoints.

diffusers reads this layout with `from_single_file`; we write it so that patched
checkpoints and test fixtures stay in the layout users already load. The mapping is
the inverse of diffusers' `convert_ldm_*_checkpoint`, generalised to any block count,
and is verified by a round-trip test through diffusers itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from patchkit.core.fingerprint import canonical_key

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIXES = {
    # (family, component) -> prefix; OpenCLIP encoders use their own key names
    ("sd1", "text_encoder"): "cond_stage_model.transformer.",
    ("sd2", "text_encoder"): "cond_stage_model.model.",
    ("sdxl", "text_encoder"): "conditioner.embedders.0.transformer.",
    ("sdxl", "text_encoder_2"): "conditioner.embedders.1.model.",
}
OPENCLIP_COMPONENTS = {("sd2", "text_encoder"), ("sdxl", "text_encoder_2")}

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
}
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _resnet_part(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """The single-file name (without prefix) of diffusers UNet key `key`."""
    per_block = int(config["layers_per_block"]) + 1
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * per_block + j}.0.{_resnet_part(rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * per_block + j}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_part(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per_block + j}.0.{_resnet_part(rest)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per_block + j}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        slot = 2 if up_has_attention[b] else 1
        return f"output_blocks.{b * per_block + per_block - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"UNet key {key!r} has no single-file name")


_VAE_TOP = {"conv_norm_out": "norm_out", "mid_block.attentions.0": "mid.attn_1"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_to_ldm(key: str, num_blocks: int) -> str:
    """The single-file name (without prefix) of diffusers VAE key `key`."""
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        b = int(m[2]) if m[1] == "down" else num_blocks - 1 - int(m[2])
        return f"{side}.{m[1]}.{b}.block.{m[3]}.{m[4].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        return f"{side}.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{side}.up.{num_blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{side}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{side}.mid.attn_1.{_VAE_ATTENTION[m[1]]}.{m[2]}"
    module, _, param = rest.rpartition(".")
    return f"{side}.{_VAE_TOP.get(module, module)}.{param}"


def vae_tensor_to_ldm(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """LDM keeps the VAE's mid-block attention projections as 1x1 convolutions."""
    if ".mid_block.attentions.0." in key and key.endswith("weight") and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPENCLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def openclip_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP names for a diffusers CLIPTextModel(WithProjection) state dict.

    q/k/v projections merge into one `in_proj`, and the projection is stored transposed.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            if m[2] == "q":
                base = f"text_model.encoder.layers.{m[1]}.self_attn"
                parts = [state[f"{base}.{p}_proj.{m[3]}"] for p in "qkv"]
                out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}"] = torch.cat(parts)
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"transformer.resblocks.{m[1]}.{_OPENCLIP_LAYER[m[2]]}.{m[3]}"] = tensor
        elif not key.endswith("position_ids"):
            raise KeyError(f"text encoder key {key!r} has no OpenCLIP name")
    return out


def to_single_file_state(
    family: str,
    components: Mapping[str, Mapping[str, torch.Tensor]],
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """Merge diffusers component state dicts into one single-file state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in components["unet"].items():
        out[UNET_PREFIX + unet_key_to_ldm(key, unet_config)] = tensor
    blocks = len(vae_config["down_block_types"])
    for key, tensor in components["vae"].items():
        out[VAE_PREFIX + vae_key_to_ldm(key, blocks)] = vae_tensor_to_ldm(key, tensor)
    for name in ("text_encoder", "text_encoder_2"):
        if name not in components:
            continue
        prefix = TEXT_ENCODER_PREFIXES[(family, name)]
        state = {canonical_key(name, k): v for k, v in components[name].items() if not k.endswith("position_ids")}
        if (family, name) in OPENCLIP_COMPONENTS:
            out.update({prefix + k: v for k, v in openclip_to_ldm(state).items()})
        else:
            out.update({prefix + k: v for k, v in state.items()})
    return out


# --- the inverse: single-file names back to diffusers names, for reading without diffusers -----------

_UNET_TOP_INVERSE = {v: k for k, v in _UNET_TOP.items() if not k.startswith("class_embedding")}
_RESNET_INVERSE = {v: k for k, v in _RESNET.items()}
_OPENCLIP_LAYER_INVERSE = {v: k for k, v in _OPENCLIP_LAYER.items()}
_OPENCLIP_TOP_INVERSE = {v: k for k, v in _OPENCLIP_TOP.items()}


def _resnet_from_ldm(rest: str) -> str:
    for ldm, diffusers in _RESNET_INVERSE.items():
        if rest.startswith(ldm + "."):
            return diffusers + rest[len(ldm) :]
    return rest


def unet_key_from_ldm(key: str, config: Mapping[str, Any]) -> str | None:
    """The diffusers UNet key of single-file key `key` (prefix removed); None for keys diffusers has no use for."""
    per_block = int(config["layers_per_block"]) + 1
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP_INVERSE:
        top = _UNET_TOP_INVERSE[module]
        if top.startswith("add_embedding") and config.get("addition_embed_type") != "text_time":
            top = top.replace("add_embedding", "class_embedding")
        return f"{top}.{param}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", key):
        n, slot, rest = int(m[1]), int(m[2]), m[3]
        b, j = divmod(n - 1, per_block)
        if j == per_block - 1 and slot == 0 and rest.startswith("op."):
            return f"down_blocks.{b}.downsamplers.0.conv.{rest[3:]}"
        kind = "resnets" if slot == 0 else "attentions"
        return f"down_blocks.{b}.{kind}.{j}.{_resnet_from_ldm(rest) if slot == 0 else rest}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        index, rest = int(m[1]), m[2]
        if index == 1:
            return f"mid_block.attentions.0.{rest}"
        return f"mid_block.resnets.{index // 2}.{_resnet_from_ldm(rest)}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.(\d)\.(.+)", key):
        n, slot, rest = int(m[1]), int(m[2]), m[3]
        b, j = divmod(n, per_block)
        if slot == 0:
            return f"up_blocks.{b}.resnets.{j}.{_resnet_from_ldm(rest)}"
        if slot == 1 and up_has_attention[b]:
            return f"up_blocks.{b}.attentions.{j}.{rest}"
        return f"up_blocks.{b}.upsamplers.0.{rest}"
    return None


def openclip_keys_from_ldm(key: str, layers: int, projection: bool) -> list[tuple[str, int | None]]:
    """The diffusers keys an OpenCLIP key holds: [(key, None)], or q/k/v thirds of a fused in_proj as
    [(q_proj, 0), (k_proj, 1), (v_proj, 2)]; [] for keys diffusers drops.

    `layers` is the diffusers encoder's depth (SD 2 drops OpenCLIP's last block); `projection`
    says whether it keeps the text projection (CLIPTextModelWithProjection, SDXL's second encoder).
    """
    if key in _OPENCLIP_TOP_INVERSE:
        return [(_OPENCLIP_TOP_INVERSE[key], None)]
    if key == "text_projection":
        return [("text_projection.weight", None)] if projection else []
    if m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key):
        if int(m[1]) >= layers:
            return []
        return [(f"text_model.encoder.layers.{m[1]}.self_attn.{p}_proj.{m[2]}", i) for i, p in enumerate("qkv")]
    m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key)
    if m is None or int(m[1]) >= layers:
        return []
    base, module, param = f"text_model.encoder.layers.{m[1]}", m[2], m[3]
    if module in _OPENCLIP_LAYER_INVERSE:
        return [(f"{base}.{_OPENCLIP_LAYER_INVERSE[module]}.{param}", None)]
    return []
