"""Kohya names map back to the PEFT names diffusers made them from, for every weight-bearing
module of full-size SD 1.5, SD 2.1 and SDXL (UNet and text encoders, built on the meta device).
The forward direction is diffusers' own converter, so a module our vocabulary misses fails here."""

import pytest
import torch
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

from patchkit.backend.components import build_component
from patchkit.core.lora_names import peft_name
from patchkit.services.fixtures import published_configs


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_every_module_name_survives_the_kohya_round_trip(name):
    configs = published_configs(name)
    peft = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        if component not in configs:
            continue
        model = build_component(component, configs[component], meta=True)
        for module, layer in model.named_modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                for factor in ("lora_A", "lora_B"):
                    peft[f"{component}.{module}.{factor}.weight"] = torch.zeros(1)
    kohya = convert_state_dict_to_kohya(peft)
    back = {peft_name(k) for k in kohya if not k.endswith(".alpha")}
    assert len(peft) > 100
    assert back == set(peft), sorted(set(peft) ^ back)[:6]
