"""The joint re-fit (core/fuse.py) on hand-made states: the normal equations, and drift."""

import torch

from patchkit.core import fuse


def _patch(generator, width=16, out=8, rank=2, scale=1.0):
    down = torch.randn(rank, width, generator=generator, dtype=torch.float64)
    up = torch.randn(out, rank, generator=generator, dtype=torch.float64) * scale
    return {"attn2.to_k": (down.float(), up.float())}


def test_fused_delta_solves_the_least_squares_problem():
    g = torch.Generator().manual_seed(0)
    parents = [_patch(g), _patch(g)]
    targets = [torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)]
    kept = torch.randn(20, 16, generator=g)
    maps = fuse.refit_maps(targets, kept, preserve_weight=1.0, ridge=0.01)
    fitted = fuse.refit(parents, maps)["attn2.to_k"]
    assert [tuple(d.shape) for d, _ in fitted] == [(2, 16), (2, 16)]  # rank adds, ups kept
    fused = sum(u.double() @ d.double() for d, u in fitted)
    deltas = [p["attn2.to_k"][1].double() @ p["attn2.to_k"][0].double() for p in parents]
    # gradient of sum_i ||(D - Delta_i) C_i||^2 + l' ||D K||^2 + g' ||D||^2 is zero at the answer
    edited = 12
    energy = sum(float(t.double().pow(2).sum()) for t in targets)
    ridge = 0.01 * energy / (edited * 16) * edited
    gradient = sum((fused - d) @ (t.double().T @ t.double()) for d, t in zip(deltas, targets, strict=True))
    gradient = gradient + (1.0 * edited / 20) * fused @ (kept.double().T @ kept.double()) + ridge * fused
    assert float(gradient.abs().max()) < 1e-4 * float(fused.abs().max())


def test_separable_targets_keep_their_own_edit_where_a_sum_drifts():
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0].float()
    targets = [basis[:3], basis[3:6]]  # two patches' targets in orthogonal directions
    kept = basis[6:12]
    parents = [_patch(g), _patch(g)]  # random deltas: each moves the other's target too
    stacked = {"attn2.to_k": [p["attn2.to_k"] for p in parents]}
    fitted = fuse.refit(parents, fuse.refit_maps(targets, kept, preserve_weight=1.0, ridge=1e-6))
    for i in range(2):
        assert fuse.drift(parents[i], stacked, targets[i]) > 0.3
        assert fuse.drift(parents[i], fitted, targets[i]) < 1e-3
    # and the kept states read as the base reads them
    fused = sum(u.double() @ d.double() for d, u in fitted["attn2.to_k"])
    assert float((fused @ kept.double().T).abs().max()) < 1e-3


def test_a_patch_alone_has_no_drift():
    g = torch.Generator().manual_seed(2)
    parent = _patch(g)
    states = torch.randn(4, 16, generator=g)
    assert fuse.drift(parent, {"attn2.to_k": [parent["attn2.to_k"]]}, states) == 0.0
