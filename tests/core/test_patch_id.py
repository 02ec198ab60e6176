"""The patch id: a digest of names, dtypes, shapes and values, blind to layout and metadata."""

from __future__ import annotations

import pytest
import torch

from patchkit.core.patch_id import patch_id_of
from patchkit.errors import CorruptFileError
from patchkit.io.patch_file import file_patch_id
from patchkit.io.safetensors_io import read_header
from patchkit.io.tensors_out import save_tensors


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "unet.b.lora_A.weight": torch.randn(4, 8, generator=g),
        "unet.a.lora_B.weight": torch.randn(8, 4, generator=g),
    }


def test_file_and_memory_agree_and_metadata_does_not_count(tmp_path):
    plain, annotated = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_tensors(plain, tensors())
    save_tensors(annotated, tensors(), metadata={"patchkit.manifest": "{}", "x": "y"})
    assert file_patch_id(plain, read_header(plain)) == patch_id_of(tensors())
    assert file_patch_id(annotated, read_header(annotated)) == patch_id_of(tensors())


def test_every_kind_of_change_changes_the_id():
    base = patch_id_of(tensors())
    value = tensors()
    value["unet.a.lora_B.weight"][0, 0] += 1e-6
    renamed = {k.replace("unet.a", "unet.c"): v for k, v in tensors().items()}
    retyped = {k: v.half() for k, v in tensors().items()}
    reshaped = {k: v.reshape(-1) for k, v in tensors().items()}
    ids = {patch_id_of(t) for t in (value, renamed, retyped, reshaped)}
    assert base not in ids and len(ids) == 4


def kohya_of(peft: dict[str, torch.Tensor], alpha: float | None = None) -> dict[str, torch.Tensor]:
    """The kohya layout of `peft`, written by hand as sd-scripts names it (not by our converter)."""
    out = {}
    for name, value in peft.items():
        module, factor = name.removeprefix("unet.").rsplit(".lora_", 1)
        flat = "lora_unet_" + module.replace(".", "_")
        out[f"{flat}.lora_{'down' if factor.startswith('A') else 'up'}.weight"] = value
        if factor.startswith("A"):
            out[f"{flat}.alpha"] = torch.tensor(float(value.shape[0]) if alpha is None else alpha)
    return out


def attention_patch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    modules = ["down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", "mid_block.attentions.0.proj_in",
               "up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_out.0"]  # fmt: skip
    out = {}
    for module in modules:
        out[f"unet.{module}.lora_A.weight"] = torch.randn(4, 8, generator=g)
        out[f"unet.{module}.lora_B.weight"] = torch.randn(8, 4, generator=g)
    return out


def test_both_layouts_of_one_patch_have_one_id_in_memory_and_on_disk(tmp_path):
    peft, kohya = attention_patch(), kohya_of(attention_patch())
    assert patch_id_of(peft) == patch_id_of(kohya)
    for name, tensors in (("p", peft), ("k", kohya)):
        save_tensors(tmp_path / f"{name}.safetensors", tensors)
    ids = {file_patch_id(f, read_header(f)) for f in (tmp_path / "p.safetensors", tmp_path / "k.safetensors")}
    assert ids == {patch_id_of(peft)}


def test_an_alpha_that_scales_the_delta_changes_the_id(tmp_path):
    scaled = kohya_of(attention_patch(), alpha=2.0)  # scale 2/4: another delta than the PEFT file's
    assert patch_id_of(scaled) != patch_id_of(attention_patch())
    save_tensors(tmp_path / "k.safetensors", scaled)
    assert file_patch_id(tmp_path / "k.safetensors", read_header(tmp_path / "k.safetensors")) == patch_id_of(scaled)
    bf16 = {k: (v.bfloat16() if k.endswith(".alpha") else v) for k, v in kohya_of(attention_patch()).items()}
    save_tensors(tmp_path / "b.safetensors", bf16)
    assert file_patch_id(tmp_path / "b.safetensors", read_header(tmp_path / "b.safetensors")) == patch_id_of(bf16)


def test_a_file_mixing_layouts_of_one_weight_is_refused():
    mixed = dict(attention_patch(), **kohya_of(attention_patch()))
    with pytest.raises(CorruptFileError, match="two layouts"):
        patch_id_of(mixed)
