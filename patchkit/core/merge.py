"""Merging LoRA patches: exact concatenation, SVD re-factoring, and the conflicts to refuse or warn about.

concat: the merged delta is sum_i w_i * s_i * B_i A_i exactly, by stacking factors
(ranks add). svd: the same delta re-factored to rank R through thin QR decompositions of
the stacked factors, so the SVD is of a (sum of ranks)-square matrix, never of the full
weight-sized delta; the relative Frobenius error falls out of the discarded singular values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchkit.core.fusion import LoraFactors
from patchkit.errors import Conflict

OPPOSING_COSINE = -0.5


@dataclass(frozen=True)
class MergedModule:
    component: str
    module: str
    down: torch.Tensor
    up: torch.Tensor
    relative_error: float  # 0.0 for concat
    squared_norm: float = 0.0  # ||delta||_F^2, known after svd


def _float(matrix: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A factor as a float32 torch tensor, whether it was read with torch or numpy."""
    return torch.as_tensor(matrix).float()


def _scaled(factors: LoraFactors, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight * (1.0 if factors.alpha is None else factors.alpha / factors.rank)
    return _float(factors.down), _float(factors.up) * scale


def _grouped(patches: Sequence[Sequence[LoraFactors]]) -> dict[tuple[str, str], list[tuple[int, LoraFactors]]]:
    grouped: dict[tuple[str, str], list[tuple[int, LoraFactors]]] = {}
    for i, factors in enumerate(patches):
        for f in factors:
            grouped.setdefault((f.component, f.module), []).append((i, f))
    return grouped


def _stacked(members: list[tuple[int, LoraFactors]], weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [_scaled(f, weights[i]) for i, f in members]
    return torch.cat([a for a, _ in pairs], dim=0), torch.cat([b for _, b in pairs], dim=1)


def concat(patches: Sequence[Sequence[LoraFactors]], weights: Sequence[float]) -> list[MergedModule]:
    merged = []
    for (component, module), members in sorted(_grouped(patches).items()):
        down, up = _stacked(members, weights)
        merged.append(MergedModule(component, module, down.contiguous(), up.contiguous(), 0.0))
    return merged


def _refactor(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-`rank` factors of up @ down, and the relative Frobenius error of dropping the rest."""
    q_up, r_up = torch.linalg.qr(up.double())  # up = Qu Ru
    q_down, r_down = torch.linalg.qr(down.double().T)  # down^T = Qd Rd
    u, sigma, vh = torch.linalg.svd(r_up @ r_down.T)  # up @ down = Qu (Ru Rd^T) Qd^T
    keep = min(rank, sigma.numel())
    total = float(sigma.pow(2).sum())
    error = (float(sigma[keep:].pow(2).sum()) / total) ** 0.5 if total > 0 else 0.0
    new_up = (q_up @ u[:, :keep]) * sigma[:keep]
    new_down = vh[:keep] @ q_down.T
    return new_down.float().contiguous(), new_up.float().contiguous(), error, total


def svd(patches: Sequence[Sequence[LoraFactors]], weights: Sequence[float], rank: int) -> list[MergedModule]:
    merged = []
    for (component, module), members in sorted(_grouped(patches).items()):
        down, up = _stacked(members, weights)
        new_down, new_up, error, norm = _refactor(down, up, rank)
        merged.append(MergedModule(component, module, new_down, new_up, error, norm))
    return merged


def overall_error(modules: Sequence[MergedModule]) -> float:
    """Relative Frobenius error over all modules, each weighted by its delta's squared norm."""
    residual = sum((m.relative_error**2) * m.squared_norm for m in modules)
    total = sum(m.squared_norm for m in modules)
    return (residual / total) ** 0.5 if total > 0 else 0.0


def _inner_products(members: Sequence[LoraFactors]) -> torch.Tensor:
    """<B_i A_i, B_j A_j>_F for every pair at once, from two Gram matrices; never forms a delta.

    Each inner product is the sum of the elementwise product of a block of B^T B and the same
    block of A A^T, where B and A stack the members' factors.
    """
    ranks = [m.rank for m in members]
    ups = torch.cat([_float(m.up) for m in members], dim=1)
    downs = torch.cat([_float(m.down) for m in members], dim=0)
    product = (ups.T @ ups) * (downs @ downs.T)
    owner = torch.repeat_interleave(torch.arange(len(members)), torch.tensor(ranks))
    blocks = torch.nn.functional.one_hot(owner, len(members)).double()  # (sum of ranks) x members
    return blocks.T @ product.double() @ blocks


def concept_conflicts(manifests: Sequence[Mapping[str, Any]]) -> list[Conflict]:
    conflicts = []
    bases = {m["base"]["fingerprint"] for m in manifests}
    if len(bases) > 1:
        names = ", ".join(f"{m['name']} ({m['base']['fingerprint'][:12]}…)" for m in manifests)
        conflicts.append(Conflict("base", True, f"the patches were made for different base models: {names}"))
    forgotten: dict[str, str] = {}
    corrected: dict[str, tuple[str, str]] = {}
    for m in manifests:
        for c in m["concepts"]:
            if c["action"] == "forget":
                forgotten.setdefault(c["name"], m["name"])
            else:
                earlier = corrected.setdefault(c["name"], (c["target"], m["name"]))
                if earlier[0] != c["target"]:
                    conflicts.append(Conflict("two-targets", True,
                        f"{c['name']!r} is corrected to {earlier[0]!r} by {earlier[1]} and to {c['target']!r} by {m['name']}"))  # fmt: skip  # noqa: E501
    for name, (target, who) in corrected.items():
        if name in forgotten:
            conflicts.append(Conflict("forget-vs-correct", True,
                f"{name!r} is forgotten by {forgotten[name]} but corrected to {target!r} by {who}"))  # fmt: skip
    return conflicts


def delta_conflicts(
    patches: Sequence[Sequence[LoraFactors]], names: Sequence[str], weights: Sequence[float]
) -> list[Conflict]:
    """Modules that two weighted patches push in opposite directions (cosine < -0.5), where they overlap."""
    conflicts = []
    for (component, module), members in sorted(_grouped(patches).items()):
        if len(members) < 2:
            continue
        inner = _inner_products([f for _, f in members])
        norms = inner.diagonal().clamp_min(0).sqrt()
        owners = [i for i, _ in members]
        signs = torch.tensor([1.0 if weights[i] >= 0 else -1.0 for i in owners], dtype=torch.float64)
        denominator = torch.outer(norms, norms)
        cosine = torch.where(denominator > 0, torch.outer(signs, signs) * inner / denominator, 0.0)
        for x, y in torch.nonzero(torch.triu(cosine < OPPOSING_COSINE, diagonal=1)).tolist():
            conflicts.append(Conflict("opposing-deltas", False,
                f"{names[owners[x]]} and {names[owners[y]]} push {component}.{module} in opposite directions "
                f"(cosine {float(cosine[x, y]):.2f})"))  # fmt: skip
    return conflicts
