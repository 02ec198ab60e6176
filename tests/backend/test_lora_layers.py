import pytest
import torch
from torch import nn

from patchkit.backend import lora_layers
from patchkit.errors import UsageError


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn2 = nn.Module()
        self.attn2.to_k = nn.Linear(8, 6, bias=False)
        self.attn2.to_v = nn.Linear(8, 6, bias=False)
        self.attn1 = nn.Module()
        self.attn1.to_k = nn.Linear(8, 6, bias=False)


def test_fresh_adapters_change_nothing_and_export_peft_keys():
    block = Block()
    x = torch.randn(3, 8)
    before = block.attn2.to_k(x)
    adapters = lora_layers.inject(block, ("attn2.to_k", "attn2.to_v"), rank=2, seed=0)
    assert set(adapters) == {"attn2.to_k", "attn2.to_v"}
    assert torch.equal(block.attn2.to_k(x), before)
    state, error = lora_layers.peft_state(adapters, rank=2)
    assert error is None
    assert sorted(state) == [
        "unet.attn2.to_k.lora_A.weight",
        "unet.attn2.to_k.lora_B.weight",
        "unet.attn2.to_v.lora_A.weight",
        "unet.attn2.to_v.lora_B.weight",
    ]
    assert state["unet.attn2.to_k.lora_A.weight"].shape == (2, 8)
    assert state["unet.attn2.to_k.lora_B.weight"].shape == (6, 2)


def test_training_changes_output_and_disabled_restores_it():
    block = Block()
    x = torch.randn(3, 8)
    base = block.attn2.to_v(x).detach()
    adapters = lora_layers.inject(block, ("attn2.to_v",), rank=2, seed=0)
    with torch.no_grad():
        adapters["attn2.to_v"].lora_B.fill_(0.5)
    assert not torch.allclose(block.attn2.to_v(x), base)
    with lora_layers.disabled(adapters):
        assert torch.equal(block.attn2.to_v(x), base)
    lora_layers.remove(block, adapters)
    assert isinstance(block.attn2.to_v, nn.Linear)


def test_same_seed_same_init():
    a, _ = lora_layers.peft_state(lora_layers.inject(Block(), ("attn2.to_k",), rank=2, seed=7), rank=2)
    b, _ = lora_layers.peft_state(lora_layers.inject(Block(), ("attn2.to_k",), rank=2, seed=7), rank=2)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("rank", [0, -1, 7])
def test_rank_out_of_range(rank):
    with pytest.raises(UsageError, match=r"outside 1\.\.6"):
        lora_layers.inject(Block(), ("attn2.to_k",), rank=rank, seed=0)


def test_no_matching_layer():
    with pytest.raises(UsageError, match="no layer ends with"):
        lora_layers.inject(Block(), ("attn3.to_q",), rank=1, seed=0)


def test_full_delta_exports_its_best_low_rank_factors_and_error():
    block = Block()
    adapters = lora_layers.inject(block, ("attn2.to_k",), rank=2, seed=0, full=True)
    delta = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapters["attn2.to_k"].delta.copy_(delta)
    x = torch.randn(3, 8)
    assert torch.allclose(block.attn2.to_k(x), block.attn2.to_k.base(x) + x @ delta.T)
    state, error = lora_layers.peft_state(adapters, rank=2)
    product = state["unet.attn2.to_k.lora_B.weight"] @ state["unet.attn2.to_k.lora_A.weight"]
    sigma = torch.linalg.svdvals(delta)
    expected = float((sigma[2:].pow(2).sum() / sigma.pow(2).sum()).sqrt())
    assert error == pytest.approx(expected, rel=1e-4)
    assert float((delta - product).norm() / delta.norm()) == pytest.approx(expected, rel=1e-4)
    _, zero = lora_layers.peft_state(adapters, rank=6)
    assert zero == pytest.approx(0.0, abs=1e-6)
