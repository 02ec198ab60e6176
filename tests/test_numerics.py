"""The tolerance helpers themselves: they accept reordered float32 sums and catch real errors."""

import pytest
import torch

from tests.numerics import assert_paired, assert_within, product_bound


def test_product_bound_accepts_another_summation_order_and_refuses_a_real_error():
    g = torch.Generator().manual_seed(0)
    up, down = torch.randn(64, 8, generator=g), torch.randn(8, 32, generator=g)
    exact = up.double() @ down.double()
    reordered = sum(up[:, k : k + 1] @ down[k : k + 1, :] for k in reversed(range(8)))  # rank terms summed backwards
    assert_within(up @ down, reordered, product_bound(up, down))
    assert_within(up @ down, exact, product_bound(up, down))
    with pytest.raises(AssertionError, match="exceeds its bound"):
        assert_within((up @ down) * (1 + 1e-4), exact, product_bound(up, down))


def test_pairing_passes_own_references_and_fails_swapped_ones():
    g = torch.Generator().manual_seed(1)
    refs = [torch.randn(4, 4, generator=g) for _ in range(3)]
    noisy = [r + 1e-7 * torch.randn(4, 4, generator=g) for r in refs]
    right, wrong = assert_paired(noisy, refs)
    assert right < 1e-5 < wrong
    with pytest.raises(AssertionError, match="not paired"):
        assert_paired(noisy, [refs[1], refs[2], refs[0]])
