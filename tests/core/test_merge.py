"""Merge maths: exact concat, QR-based SVD re-factoring with its true error, and conflict detection."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from patchkit.core import merge
from patchkit.core.fusion import LoraFactors
from tests.numerics import assert_within, factor_bound


def _patch(seed: int, modules=("a", "b"), rank: int = 3, out: int = 12, inner: int = 10) -> list[LoraFactors]:
    g = torch.Generator().manual_seed(seed)
    return [
        LoraFactors("unet", m, torch.randn(rank, inner, generator=g), torch.randn(out, rank, generator=g), None)
        for m in modules
    ]


def _delta(module: merge.MergedModule) -> torch.Tensor:
    return module.up.double() @ module.down.double()


def test_concat_is_the_weighted_sum_of_deltas():
    patches = [_patch(0), _patch(1, modules=("b", "c")), _patch(2)]
    weights = [1.0, -0.5, 2.0]
    merged = {m.module: m for m in merge.concat(patches, weights)}
    for module in ("a", "b", "c"):
        members = [(f, w) for p, w in zip(patches, weights, strict=True) for f in p if f.module == module]
        expected = sum(w * torch.from_numpy(f.delta()).double() for f, w in members)
        # each side rounds its own float32 products and scalings: bounded by the factors' sizes
        bound = sum(factor_bound(f, w) for f, w in members)
        assert_within(_delta(merged[module]), expected, bound)
    assert merged["b"].down.shape[0] == 9 and merged["a"].down.shape[0] == 6  # ranks add where modules overlap


def test_svd_error_is_the_true_relative_frobenius_error_and_optimal():
    patches = [_patch(s) for s in range(4)]
    weights = [1.0] * 4
    exact = {m.module: _delta(m) for m in merge.concat(patches, weights)}
    for module in merge.svd(patches, weights, rank=5):
        target = exact[module.module]
        true_error = float(torch.linalg.norm(target - _delta(module)) / torch.linalg.norm(target))
        assert module.relative_error == pytest.approx(true_error, rel=1e-6)
        sigma = torch.linalg.svdvals(target)
        best = float((sigma[5:].pow(2).sum() / sigma.pow(2).sum()).sqrt())
        assert module.relative_error == pytest.approx(best, rel=1e-6)  # Eckart-Young: nothing does better
        assert module.down.shape == (5, 10) and module.up.shape == (12, 5)


def test_svd_at_full_rank_is_exact_and_overall_error_weights_by_norm():
    patches = [_patch(0), _patch(1)]
    modules = merge.svd(patches, [1.0, 1.0], rank=6)
    assert all(m.relative_error < 1e-6 for m in modules)
    low = merge.svd(patches, [1.0, 1.0], rank=1)
    overall = merge.overall_error(low)
    assert min(m.relative_error for m in low) <= overall <= max(m.relative_error for m in low)


def _manifest(name: str, concepts: list[dict], fingerprint: str = "a" * 64) -> dict:
    return {"name": name, "base": {"fingerprint": fingerprint}, "concepts": concepts}


def _concept(name: str, action: str = "forget", target: str | None = None) -> dict:
    return {"name": name, "action": action} | ({"target": target} if target else {})


def test_concept_conflicts():
    forget = _manifest("p1", [_concept("circle")])
    correct = _manifest("p2", [_concept("circle", "correct", "square")])
    other_target = _manifest("p3", [_concept("circle", "correct", "ring")])
    other_base = _manifest("p4", [_concept("noir")], fingerprint="b" * 64)
    assert merge.concept_conflicts([forget, _manifest("p5", [_concept("noir")])]) == []
    kinds = {c.kind for c in merge.concept_conflicts([forget, correct, other_target, other_base])}
    assert kinds == {"base", "forget-vs-correct", "two-targets"}
    assert all(c.fatal for c in merge.concept_conflicts([forget, correct]))


def test_opposing_deltas_warn_and_weights_count():
    patch = _patch(0)
    flipped = [replace(f, up=-f.up) for f in patch]
    found = merge.delta_conflicts([patch, flipped], ["p", "q"], [1.0, 1.0])
    assert len(found) == 2 and not any(c.fatal for c in found) and "cosine -1.00" in found[0].message
    assert merge.delta_conflicts([patch, flipped], ["p", "q"], [1.0, -1.0]) == []
    assert merge.delta_conflicts([patch, _patch(1)], ["p", "q"], [1.0, 1.0]) == []  # random: nearly orthogonal
