"""LoRA factor pairing and fusion maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchkit.core.fusion import PatchFormatError, fuse, lora_factors
from patchkit.io.arrays import from_float32
from tests.numerics import assert_within, product_bound


def _pair(out: int = 6, inner: int = 5, rank: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "unet.m.attn2.to_k.lora_A.weight": torch.randn(rank, inner, generator=g),
        "unet.m.attn2.to_k.lora_B.weight": torch.randn(out, rank, generator=g),
    }


def test_factors_pair_and_delta_is_b_at_a():
    tensors = _pair()
    [factor] = lora_factors(tensors)
    assert (factor.component, factor.module, factor.weight_key) == ("unet", "m.attn2.to_k", "m.attn2.to_k.weight")
    up, down = tensors["unet.m.attn2.to_k.lora_B.weight"], tensors["unet.m.attn2.to_k.lora_A.weight"]
    # numpy's BLAS and torch's may sum the rank terms in another order: bound, not atol
    assert_within(factor.delta(), up @ down, product_bound(up, down))


def test_kohya_alpha_scales_by_alpha_over_rank():
    tensors = _pair(rank=2) | {"unet.m.attn2.to_k.alpha": torch.tensor(1.0)}
    [factor] = lora_factors(tensors)
    plain = lora_factors(_pair(rank=2))[0].delta()
    assert np.allclose(factor.delta(), plain * 0.5)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"unet.m.lora_A.weight": torch.ones(2, 3)}, "no lora_B"),
        ({"unet.m.lora_up.weight": torch.ones(2, 3)}, "not a LoRA factor"),
        ({"unet.m.lora_A.weight": torch.ones(2, 3), "unet.m.lora_B.weight": torch.ones(4, 3)}, "do not pair"),
    ],
)
def test_bad_layouts_are_named(tensors, message):
    with pytest.raises(PatchFormatError, match=message):
        lora_factors(tensors)


def test_fuse_adds_in_float32_and_casts_once():
    weight = np.full((2, 2), 1.0, dtype=np.float16)
    tiny = np.full((2, 2), 2.0**-12, dtype=np.float32)  # below fp16's resolution at 1.0 on its own
    fused = fuse(weight, [(tiny, 1.0), (tiny, 1.0), (tiny, 1.0), (tiny, 1.0)])
    assert fused.dtype == np.float32
    # four steps cast separately would each round away; summed in fp32 they reach 1 + 2^-10
    assert np.array_equal(from_float32(fused, "F16"), np.full((2, 2), 1.0 + 2.0**-10, dtype=np.float16))


def test_bfloat16_factors_go_through_torch():
    tensors = {k: v.to(torch.bfloat16) for k, v in _pair().items()}
    [factor] = lora_factors(tensors)
    up = tensors["unet.m.attn2.to_k.lora_B.weight"].float()
    down = tensors["unet.m.attn2.to_k.lora_A.weight"].float()
    assert_within(factor.delta(), up @ down, product_bound(up, down))
