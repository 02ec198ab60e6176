import json
from pathlib import Path

import pytest
import torch

from patchkit.core.ldm_layout import openclip_to_ldm, unet_key_to_ldm, vae_key_to_ldm, vae_tensor_to_ldm

ARCH = Path(__file__).resolve().parents[2] / "patchkit" / "architectures"
SD15_UNET = json.loads((ARCH / "sd15" / "unet" / "config.json").read_text())
SDXL_UNET = json.loads((ARCH / "sdxl" / "unet" / "config.json").read_text())


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        # Names as they appear in the original SD 1.5 checkpoint (v1-5-pruned.safetensors).
        (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        ),
        ("down_blocks.1.resnets.1.conv1.weight", "input_blocks.5.0.in_layers.2.weight"),
        ("down_blocks.2.downsamplers.0.conv.bias", "input_blocks.9.0.op.bias"),
        ("mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"),
        ("mid_block.attentions.0.proj_in.weight", "middle_block.1.proj_in.weight"),
        ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
        ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),
        (
            "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v.weight",
            "output_blocks.11.1.transformer_blocks.0.attn2.to_v.weight",
        ),
        ("up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"),
        ("time_embedding.linear_2.bias", "time_embed.2.bias"),
        ("conv_norm_out.weight", "out.0.weight"),
    ],
)
def test_sd15_unet_keys(diffusers, ldm):
    assert unet_key_to_ldm(diffusers, SD15_UNET) == ldm


def test_sdxl_unet_keys():
    assert unet_key_to_ldm("add_embedding.linear_1.weight", SDXL_UNET) == "label_emb.0.0.weight"
    # SDXL's first up block has attention, so its upsampler sits in slot 2.
    assert unet_key_to_ldm("up_blocks.0.upsamplers.0.conv.weight", SDXL_UNET) == "output_blocks.2.2.conv.weight"
    assert unet_key_to_ldm("up_blocks.1.upsamplers.0.conv.weight", SDXL_UNET) == "output_blocks.5.2.conv.weight"


def test_unknown_unet_key_is_refused():
    with pytest.raises(KeyError):
        unet_key_to_ldm("controlnet_down_blocks.0.weight", SD15_UNET)


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        ("encoder.down_blocks.0.resnets.1.conv2.weight", "encoder.down.0.block.1.conv2.weight"),
        ("decoder.up_blocks.0.resnets.2.norm1.bias", "decoder.up.3.block.2.norm1.bias"),
        ("decoder.up_blocks.1.upsamplers.0.conv.weight", "decoder.up.2.upsample.conv.weight"),
        ("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"),
        ("encoder.mid_block.attentions.0.to_q.weight", "encoder.mid.attn_1.q.weight"),
        ("decoder.mid_block.attentions.0.to_out.0.bias", "decoder.mid.attn_1.proj_out.bias"),
        ("decoder.mid_block.resnets.1.conv1.weight", "decoder.mid.block_2.conv1.weight"),
        ("encoder.conv_norm_out.weight", "encoder.norm_out.weight"),
        ("quant_conv.weight", "quant_conv.weight"),
    ],
)
def test_sd_vae_keys(diffusers, ldm):
    assert vae_key_to_ldm(diffusers, 4) == ldm


def test_vae_attention_becomes_1x1_conv():
    weight = torch.ones(8, 8)
    assert vae_tensor_to_ldm("encoder.mid_block.attentions.0.to_k.weight", weight).shape == (8, 8, 1, 1)
    assert vae_tensor_to_ldm("encoder.conv_in.weight", weight).shape == (8, 8)


def test_openclip_merges_qkv_and_transposes_projection():
    q, k, v = torch.full((4, 4), 1.0), torch.full((4, 4), 2.0), torch.full((4, 4), 3.0)
    proj = torch.arange(8.0).reshape(2, 4)
    state = {
        "text_model.encoder.layers.0.self_attn.q_proj.weight": q,
        "text_model.encoder.layers.0.self_attn.k_proj.weight": k,
        "text_model.encoder.layers.0.self_attn.v_proj.weight": v,
        "text_model.encoder.layers.0.mlp.fc1.bias": torch.zeros(3),
        "text_projection.weight": proj,
    }
    out = openclip_to_ldm(state)
    assert torch.equal(out["transformer.resblocks.0.attn.in_proj_weight"], torch.cat([q, k, v]))
    assert torch.equal(out["text_projection"], proj.T)
    assert "transformer.resblocks.0.mlp.c_fc.bias" in out
