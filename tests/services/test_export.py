"""`export`: PEFT <-> kohya with the delta unchanged, loadable by diffusers, and usable by apply and merge."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from patchkit.backend import pipeline
from patchkit.errors import UsageError
from patchkit.io.patch_file import read_patch
from patchkit.models import refs
from patchkit.services.apply import apply
from patchkit.services.export import export
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.patches import peft_tensors
from patchkit.services.sources import PatchSource
from tests.helpers import patch_deltas


def _deltas(path):
    return patch_deltas(peft_tensors(path, read_patch(path).manifest))


def test_round_trip_keeps_the_delta_and_kohya_loads_in_diffusers(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle", magnitude=0.3)
    kohya = export(patch, "kohya", tmp_path / "k.safetensors").output
    keys = load_file(str(kohya))
    assert all(k.startswith("lora_unet_") for k in keys)
    assert {k.rsplit(".", 2)[-2] if k.endswith(".weight") else "alpha" for k in keys} == {
        "lora_down", "lora_up", "alpha"
    }  # fmt: skip
    manifest = read_patch(kohya).manifest
    assert manifest["format"]["keys"] == "kohya" and read_patch(kohya).id_matches
    back = export(kohya, "peft", tmp_path / "back.safetensors").output
    # networks.lora is the module that reads the kohya layout: claimed by that file only
    assert read_patch(kohya).header.metadata.get("ss_network_module") == "networks.lora"
    assert "ss_network_module" not in read_patch(back).header.metadata
    # one patch, one id, whichever layout holds it (the registry and stacks pin it)
    assert read_patch(kohya).patch_id == read_patch(back).patch_id == read_patch(patch).patch_id
    original, returned = _deltas(patch), _deltas(back)
    assert original.keys() == returned.keys()
    assert all(torch.allclose(original[k], returned[k], atol=1e-7) for k in original)

    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))

    def draw():
        return pipe("a photo of a circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    output_type="np").images  # fmt: skip

    pipe.load_lora_weights(str(patch), adapter_name="peft")
    with_peft = draw()
    # the PEFT file tells diffusers its LoraConfig (lora_adapter_metadata), read by diffusers' own reader
    from diffusers.utils.state_dict_utils import _load_sft_state_dict_metadata
    from peft import LoraConfig

    stated = _load_sft_state_dict_metadata(str(patch))
    assert stated is not None and _load_sft_state_dict_metadata(str(kohya)) is None
    config = LoraConfig(**{k.removeprefix("unet."): v for k, v in stated.items()})
    loaded = pipe.unet.peft_config["peft"]
    assert config.r == loaded.r == 4 and config.lora_alpha == loaded.lora_alpha == 4
    modules = {k.removeprefix("unet.").removesuffix(".lora_A.weight") for k in load_file(str(patch)) if "lora_A" in k}
    injected = {n for n, m in pipe.unet.named_modules() if "peft" in getattr(m, "lora_A", {})}
    assert set(config.target_modules) == injected == modules  # (PEFT shortens loaded.target_modules to suffixes)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(kohya), adapter_name="kohya")
    assert abs(draw() - with_peft).max() < 1e-4  # diffusers reads our kohya file as the same LoRA


def test_apply_takes_either_layout_to_the_same_output(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    kohya = export(patch, "kohya", tmp_path / "k.safetensors").output
    a = apply(str(folder), [PatchSource(patch)], tmp_path / "a")
    b = apply(str(folder), [PatchSource(kohya)], tmp_path / "b")
    assert a.output_fingerprint == b.output_fingerprint


def test_export_refusals(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    with pytest.raises(UsageError, match="already in the peft layout"):
        export(patch, "peft", tmp_path / "x.safetensors")
    with pytest.raises(UsageError, match="unknown format"):
        export(patch, "ckpt", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_kohya_alpha_scales_the_delta(tiny_models, tmp_path):
    from patchkit.core.patch_id import patch_id_of
    from patchkit.services.patches import write_patch

    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    kohya = export(patch, "kohya", tmp_path / "k.safetensors").output
    tensors = {k: (torch.tensor(2.0) if k.endswith(".alpha") else v) for k, v in load_file(str(kohya)).items()}
    manifest = dict(read_patch(kohya).manifest, patch_id=patch_id_of(tensors))
    write_patch(tmp_path / "half.safetensors", tensors, manifest, family="sd1", rank=4, resolution=64, base_name="x")
    halved, original = _deltas(tmp_path / "half.safetensors"), _deltas(patch)
    assert all(torch.allclose(halved[k], original[k] * 0.5, atol=1e-7) for k in original)  # alpha 2 / rank 4
