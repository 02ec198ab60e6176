"""Float comparisons that hold on every CPU of our kind, with tolerances derived from the arithmetic.

Two float32 evaluations of the same matrix product may sum in different orders (MKL and
oneDNN pick kernels by instruction set, OpenBLAS by its core type), so comparing them with
a fixed `atol` passes on one machine and fails on another. The classical forward-error
bound for a dot product of length K (Higham, "Accuracy and Stability of Numerical
Algorithms", eq. 3.5) is |fl(a.b) - a.b| <= gamma_K |a|.|b| with gamma_K = K u / (1 - K u),
u = 2^-24. Two evaluations can each be off by that much, so they differ by at most twice
it. Each helper below turns that bound into an elementwise tolerance.

Where the computation is a whole network (dozens of layers, softmaxes, norms), no such bound
is tight enough to be useful; `assert_paired` then checks what the test means instead: that
each result is far closer to its own reference than to any other one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

UNIT_ROUNDOFF = 2.0**-24  # float32


def gamma(k: int) -> float:
    """Higham's gamma_k for float32: the relative error bound of a k-term sum."""
    return k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)


def _as_float64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x).detach().double()


def product_bound(up: torch.Tensor | np.ndarray, down: torch.Tensor | np.ndarray, scale: float = 1.0) -> torch.Tensor:
    """Elementwise bound on how far two float32 evaluations of scale * (up @ down) can differ.

    Twice gamma_K |up| |down| for the products and sums, plus one rounding of the result for
    the scaling (and the final store).
    """
    up64, down64 = _as_float64(up), _as_float64(down)
    magnitude = abs(scale) * (up64.abs() @ down64.abs())
    return 2 * gamma(up64.shape[-1]) * magnitude + 2 * UNIT_ROUNDOFF * magnitude


def factor_bound(factor: Any, weight: float = 1.0) -> torch.Tensor:
    """product_bound for a LoraFactors' delta, weight * alpha / rank * (up @ down)."""
    scale = weight * (1.0 if factor.alpha is None else factor.alpha / factor.rank)
    return product_bound(factor.up, factor.down, scale=scale)


def assert_within(actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray, bound: torch.Tensor) -> None:
    """Every element of |actual - expected| is within its bound (an elementwise tensor)."""
    difference = (_as_float64(actual) - _as_float64(expected)).abs()
    excess = difference - bound
    worst = int(excess.argmax())
    assert bool((excess <= 0).all()), (
        f"element {worst}: |difference| {float(difference.flatten()[worst]):.3e} exceeds its bound "
        f"{float(bound.flatten()[worst]):.3e}"
    )


def assert_paired(
    results: Sequence[torch.Tensor], references: Sequence[torch.Tensor], margin: float = 1e3
) -> tuple[float, float]:
    """Each results[i] is at least `margin` times closer to references[i] than to any references[j], j != i.

    Reordered float32 sums move a result by a few ulps of its scale; handing one step's
    result to another step moves it by the whole difference between the steps. The margin
    separates the two by orders of magnitude on any CPU. Returns (worst right distance,
    nearest wrong distance), in relative Frobenius norm.
    """
    assert len(results) == len(references) >= 2, "pairing needs at least two results"

    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.linalg.norm(a.double() - b.double()) / torch.linalg.norm(b.double()).clamp_min(1e-30))

    right = max(distance(r, ref) for r, ref in zip(results, references, strict=True))
    wrong = min(distance(r, ref) for i, r in enumerate(results) for j, ref in enumerate(references) if i != j)
    assert right * margin <= wrong, (
        f"results are not paired with their own references: right {right:.3e}, wrong {wrong:.3e}"
    )
    return right, wrong
