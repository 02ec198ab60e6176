"""The patch id: a digest of names, dtypes, shapes and values, blind to layout and metadata."""

from __future__ import annotations

import torch

from patchkit.core.patch_id import patch_id_of
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
