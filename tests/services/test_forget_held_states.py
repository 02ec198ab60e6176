"""FMN's held-states term: the patch's change to what cross-attention reads from the retain prompts."""

from __future__ import annotations

from dataclasses import replace

import torch
from safetensors.torch import load_file

from patchkit.backend import conditioning, lora_layers, pipeline
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.fmn import HeldStates
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

RETAIN = ("a photo of a square", "a photo of a dog", "a red car on a street")
MODULES = ("attn2.to_k", "attn2.to_v")


def _relative_drift(unet: torch.nn.Module, tensors: dict[str, torch.Tensor], states: torch.Tensor) -> float:
    """Mean over projections of ||dW C||^2 / ||W C||^2, computed the plain way (every state, no moment)."""
    flat = states.reshape(-1, states.shape[-1])
    ratios = []
    for name, module in unet.named_modules():
        if name.endswith(MODULES) and isinstance(module, torch.nn.Linear):
            delta = tensors[f"unet.{name}.lora_B.weight"] @ tensors[f"unet.{name}.lora_A.weight"]
            ratios.append(float((flat @ delta.T).pow(2).sum() / (flat @ module.weight.T).pow(2).sum()))
    assert ratios
    return sum(ratios) / len(ratios)


def test_the_moment_form_equals_the_drift_over_every_state(tiny_models):
    folder, _ = tiny_models["sd15"]
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    states = conditioning.encode(pipe, list(RETAIN)).states
    adapters = lora_layers.inject(pipe.unet, MODULES, 2, 0)
    try:
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for adapter in adapters.values():
                assert isinstance(adapter, lora_layers.LoRALinear)
                adapter.lora_B.copy_(torch.randn(adapter.lora_B.shape, generator=generator) * 0.05)
        held = HeldStates(states, adapters)
        tensors, _ = lora_layers.peft_state(adapters, 2)
        with torch.no_grad():
            fast = float(held.drift(adapters))
    finally:
        lora_layers.remove(pipe.unet, adapters)
    assert fast > 0
    assert abs(fast - _relative_drift(pipe.unet, tensors, states)) <= 1e-4 * fast


def test_holding_the_states_keeps_the_retain_prompts_where_the_plain_loss_moves_them(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    quick = ForgetSettings(steps=20, images_per_concept=2, batch_size=2, every_template=False)
    drifts = {}
    for weight in (0.0, 30.0):
        out = tmp_path / f"held-{weight}.safetensors"
        request = ForgetRequest(
            ModelSource(str(folder)), (Concept("circle", "object"),), out,
            settings=replace(quick, held_state_weight=weight),
            retain_prompts=RETAIN, default_retain=False,
        )  # fmt: skip
        forget(request)
        pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
        states = conditioning.encode(pipe, list(RETAIN)).states
        drifts[weight] = _relative_drift(pipe.unet, load_file(str(out)), states)
    # the plain loss moves what the keys and values make of the retain prompts; the term holds it
    assert drifts[0.0] > 1e-4
    assert drifts[30.0] < drifts[0.0] / 10
