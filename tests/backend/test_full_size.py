"""Full-size SD 1.5 and SD 2.1 with random weights, and SDXL's structure on the meta device.

SDXL at full size is about 10 GB in fp32 (UNet 2.6 B parameters); building and converting it
would take most of CI's memory and time, so its check runs on the meta device: every key and
shape survives our single-file layout and diffusers' own reading of it.
"""

import pytest
import torch
from diffusers.loaders.single_file_utils import infer_diffusers_model_type

from patchkit.backend import pipeline
from patchkit.backend.components import build_component
from patchkit.backend.single_file import to_diffusers_components
from patchkit.core.ldm_layout import to_single_file_state
from patchkit.io.safetensors_io import LazyTensors
from patchkit.models import refs, weights
from patchkit.services.fixtures import build_random_model, published_configs

EXPECTED_TYPE = {"sd15": "v1", "sd21": "v2", "sdxl": "xl_base"}
EXPECTED_PARAMETERS = {"sd15": (859_520_964, 123_060_480), "sd21": (865_910_724, 340_387_840)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_full_size_family_and_fingerprint(name, tmp_path):
    folder, single = tmp_path / name, tmp_path / f"{name}.safetensors"
    build_random_model(name, folder, dtype="fp16", single_file=single)
    as_folder = weights.describe(refs.resolve(str(folder)))
    as_file = weights.describe(refs.resolve(str(single), config=folder))
    assert as_folder.family == as_file.family == refs.family_of(published_configs(name)["unet"])
    assert as_folder.dtype == "float16"
    assert as_folder.fingerprint == as_file.fingerprint
    checkpoint = LazyTensors(single)
    assert infer_diffusers_model_type(checkpoint) == EXPECTED_TYPE[name]
    unet = sum(t.numel() for t in pipeline.component_tensors(refs.resolve(str(folder)))["unet"].values())
    assert unet == EXPECTED_PARAMETERS[name][0]
    if name == "sd15":  # a single file without --config: read, patched and reverted by the bundled SD 1.5 config
        from patchkit.services.apply import apply, revert
        from patchkit.services.fixtures import synthetic_patch
        from patchkit.services.sources import PatchSource

        patch = synthetic_patch(str(single), tmp_path / "p.safetensors", concept="circle")
        keep = tmp_path / "private" / "sd15-safe.revert.safetensors"
        keep.parent.mkdir()
        patched = apply(str(single), [PatchSource(patch)], tmp_path / "safe.safetensors", revert_data=keep)
        back = revert(str(patched.output), tmp_path / "again.safetensors", revert_data=keep)
        assert back.base_fingerprint == as_file.fingerprint


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_full_size_structure_round_trips_on_meta(name):
    configs = published_configs(name)
    family = refs.family_of(configs["unet"])
    states = {
        c: build_component(c, configs[c], meta=True).state_dict()
        for c in ("unet", "vae", "text_encoder", "text_encoder_2")
        if c in configs
    }
    single = to_single_file_state(family, states, configs["unet"], configs["vae"])
    assert infer_diffusers_model_type(single) == EXPECTED_TYPE[name]
    assert refs.family_of_single_file(set(single)) == family
    back = to_diffusers_components(single, configs, family)
    for component, state in states.items():
        from patchkit.core.fingerprint import canonical_key

        want = {canonical_key(component, k): tuple(v.shape) for k, v in state.items() if not k.endswith("position_ids")}
        got = {canonical_key(component, k): tuple(v.shape) for k, v in back[component].items()}
        assert got == want, f"{component}: {set(want) ^ set(got)}"


def test_sdxl_meta_parameter_count():
    configs = published_configs("sdxl")
    unet = build_component("unet", configs["unet"], meta=True)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    assert isinstance(unet.conv_in.weight, torch.nn.Parameter)
