"""Truncated SVD of a weight difference: the factors rebuild the cut, and the error is Eckart-Young's."""

from __future__ import annotations

import torch

from patchkit.core import low_rank


def test_factors_rebuild_the_cut_and_the_error_is_measured_on_it():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(40, 6, generator=g) @ torch.randn(6, 30, generator=g) + 1e-3 * torch.randn(40, 30, generator=g)
    spectrum = low_rank.spectrum(delta)
    for rank in (1, 3, 6, 30):
        down, up = spectrum.factors(rank)
        assert down.shape == (rank, 30) and up.shape == (40, rank)
        measured = float(torch.linalg.norm(delta - up @ down) / torch.linalg.norm(delta))
        assert abs(measured - spectrum.error(rank)) < 1e-5
    assert spectrum.error(6) < 0.01 < spectrum.error(5)  # the edit is rank 6 (plus a little noise)
    assert low_rank.smallest_rank({"m": spectrum}, 0.01) == 6


def test_no_rank_within_the_cap_is_said_as_none_and_the_overall_error_weighs_every_module():
    g = torch.Generator().manual_seed(1)
    wide = low_rank.spectrum(torch.randn(200, 200, generator=g))  # full rank: no small cut is close
    assert low_rank.smallest_rank({"wide": wide}, 0.01, cap=128) is None
    small = low_rank.spectrum(torch.randn(10, 1, generator=g) @ torch.randn(1, 10, generator=g))
    both = {"wide": wide, "small": small}
    total = float(torch.sum(wide.s.double() ** 2) + torch.sum(small.s.double() ** 2))
    lost = float(torch.sum(wide.s[1:].double() ** 2) + torch.sum(small.s[1:].double() ** 2))
    assert abs(low_rank.overall_error(both, 1) - (lost / total) ** 0.5) < 1e-9
