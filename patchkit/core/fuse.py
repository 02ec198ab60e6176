"""A joint re-fit of several cross-attention patches: each keeps its own edit in the others' company.

Patches that edit only the attn2 `to_k`/`to_v` projections act on the text-encoder states
alone, and the states do not depend on the patches. So what patch i does to its own target
is exactly Delta_i C_i, over the states C_i of its training prompts. Loaded together, the
target instead gets (sum_j Delta_j) C_i: the others' deltas add to it (the *drift*, measured
by `drift`), and a forget can come undone (on the testbed, two --ti patches stacked bring
noir back in 0.19 of its images, against 0.00 alone).

The fused delta D solves, in least squares (MACE's closed-form fusion, on the states),

    min_D  sum_i ||(D - Delta_i) C_i||^2 + lambda' ||D K||^2 + gamma' ||D||^2

where K holds the states that must read as the base reads them (the patches' retain
prompts, less any that name another patch's concept). Its answer,

    D = sum_i Delta_i G_i N^-1,   G_i = C_i^T C_i,   N = sum_i G_i + lambda' K^T K + gamma' I,

is a LoRA of rank sum_i r_i with nothing lost: patch i's up factor B_i is kept, and its down
factor A_i becomes A_i G_i N^-1. lambda' and gamma' carry the closed-form method's scaling
(docs/closed-form.md): lambda relative to the targets' count, gamma to their energy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Factors = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (down r x d, up out x r)


def refit_maps(
    targets: Sequence[torch.Tensor], kept: torch.Tensor, preserve_weight: float, ridge: float
) -> list[torch.Tensor]:
    """Q_i = G_i N^-1 (d x d, float64) for each patch: its fused down factor is A_i Q_i."""
    width = targets[0].shape[1]
    grams = [t.double().T @ t.double() for t in targets]
    edited = sum(int(t.shape[0]) for t in targets)
    energy = sum(float(t.double().pow(2).sum()) for t in targets)
    scale = energy / (max(1, edited) * width) if energy > 0 else 1.0
    n = sum(grams, torch.zeros(width, width, dtype=torch.float64))
    n = n + ridge * scale * max(1, edited) * torch.eye(width, dtype=torch.float64)
    if kept.shape[0]:
        held = kept.double()
        n = n + (preserve_weight * edited / held.shape[0]) * (held.T @ held)
    # N and G_i are symmetric, so G_i N^-1 = (N^-1 G_i)^T: solve, never invert
    return [torch.linalg.solve(n, g).T for g in grams]


def refit(
    parents: Sequence[Factors], maps: Sequence[torch.Tensor]
) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each module's fused factors, one (down, up) pair per parent that edits it."""
    out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for factors, q in zip(parents, maps, strict=True):
        for module, (down, up) in factors.items():
            out.setdefault(module, []).append(((down.double() @ q).float(), up.float()))
    return out


def _apply(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], states: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(pairs[0][1].shape[0], states.shape[0], dtype=torch.float64)
    for down, up in pairs:
        total += up.double() @ (down.double() @ states.double().T)
    return total


def drift(
    own: Factors, combined: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]], states: torch.Tensor
) -> float:
    """||(combined - own) C|| / ||own C|| over every module `own` edits: 0 when the company changes nothing."""
    moved = changed = 0.0
    for module, pair in own.items():
        mine = _apply([pair], states)
        theirs = _apply(combined.get(module, []), states) if combined.get(module) else torch.zeros_like(mine)
        moved += float(mine.pow(2).sum())
        changed += float((theirs - mine).pow(2).sum())
    return (changed / moved) ** 0.5 if moved > 0 else 0.0
