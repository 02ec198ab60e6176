"""The closed-form edit of cross-attention projections (UCE's ridge solution), as pure tensor work.

Every attn2 `to_k` and `to_v` of a Stable Diffusion UNet reads the same text-encoder
states. For each edited state c_i (a token of the concept, or a later token that carries
it) the projection W should give what it gives the anchor's state c*_i, and for each
preserved state c_j it should give what it gives now. With every state weighted as
documented in docs/closed-form.md, the least-squares answer is

    W' = W + W G,   G = (sum_i (c*_i - c_i) c_i^T) M^-1,
    M  = sum_i c_i c_i^T + lambda * (n_e / n_p) * sum_j c_j c_j^T + gamma * s * I

where n_e and n_p count the edited and preserved states (so `lambda` is the preserved
set's weight relative to the edited one whatever their sizes), s = n_e * mean ||c_i||^2 / d
puts the ridge gamma on the scale of the edited states, and I is the identity. One G
serves every projection, because every projection reads the same states; each
projection's delta W G is then cut to the patch's rank by SVD.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


class Grams:
    """The sums the solve needs, gathered a batch of states at a time: memory is O(d^2) for any
    number of prompts (a 100-concept SDXL run holds two 2048 x 2048 matrices, not its states)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.edited = 0  # n_e
        self.held = 0  # n_p
        self.energy = 0.0  # sum ||c_i||^2 over the edited states
        self.sources = torch.zeros(width, width, dtype=torch.float64)  # sum c_i c_i^T
        self.moved = torch.zeros(width, width, dtype=torch.float64)  # sum (c*_i - c_i) c_i^T
        self.kept = torch.zeros(width, width, dtype=torch.float64)  # sum c_j c_j^T

    def add_edits(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        """Rows of `sources` (n, d) should read as the same rows of `targets` (guidance applied)."""
        if sources.shape != targets.shape or sources.ndim != 2 or sources.shape[1] != self.width:
            raise ValueError(f"edits {tuple(sources.shape)} -> {tuple(targets.shape)} are not n x {self.width}")
        src, dst = sources.double(), targets.double()
        self.sources += src.T @ src
        self.moved += (dst - src).T @ src
        self.energy += float(src.pow(2).sum())
        self.edited += src.shape[0]

    def add_held(self, states: torch.Tensor) -> None:
        """Rows of `states` (n, d) must read as they do now."""
        if states.ndim != 2 or states.shape[1] != self.width:
            raise ValueError(f"held states {tuple(states.shape)} are not n x {self.width}")
        held = states.double()
        self.kept += held.T @ held
        self.held += held.shape[0]


@dataclass(frozen=True)
class Regulariser:
    preserve_weight: float  # lambda: the preserved states' total weight relative to the edited ones
    ridge: float  # gamma: pulls G towards 0 in directions no state spans


def state_map(grams: Grams, regulariser: Regulariser) -> torch.Tensor:
    """G (d, d), in float64: W' = W + W G for every projection that reads these states."""
    d, edited = grams.width, max(1, grams.edited)
    scale = grams.energy / (edited * d) if grams.edited and grams.energy > 0 else 1.0
    m = grams.sources + regulariser.ridge * scale * edited * torch.eye(d, dtype=torch.float64)
    if grams.held:
        m = m + (regulariser.preserve_weight * edited / grams.held) * grams.kept
    # M is symmetric positive definite (the ridge makes it so): solve, never invert
    solved: torch.Tensor = torch.linalg.solve(m, grams.moved.T).T
    return solved


def adversarial_states(sources: torch.Tensor, state_map_g: torch.Tensor, damping: float = 1e-2) -> torch.Tensor:
    """RECE's closed-form attack on an edit (arXiv 2407.12383): the states e that the edited
    projections read as the originals c, i.e. (I + G) e = c, damped: e = (A^T A + mu I)^-1 A^T c.

    Every projection is W (I + G), so one e per c restores the concept in all of them at
    once; a robust edit moves these too. `sources` rows are c; `damping` is mu, relative to
    A's scale (A is close to I outside the edited directions).
    """
    d = state_map_g.shape[0]
    a = torch.eye(d, dtype=torch.float64) + state_map_g
    normal = a.T @ a + damping * torch.eye(d, dtype=torch.float64)
    found: torch.Tensor = torch.linalg.solve(normal, a.T @ sources.double().T).T
    return found


@dataclass(frozen=True)
class Factors:
    tensors: dict[str, torch.Tensor]  # PEFT keys: <prefix>.<module>.lora_A.weight / lora_B.weight
    error: float  # relative Frobenius error of the rank cut, over every delta together


def low_rank_deltas(
    projections: Iterable[tuple[str, torch.Tensor]], state_map_g: torch.Tensor, rank: int, prefix: str = "unet"
) -> Factors:
    """Each projection's delta W G cut to `rank`, in float32 PEFT factors (B holds the singular values).

    The cut is a randomised SVD (Halko, Martinsson & Tropp 2011: a Gaussian sketch of
    rank + 16 columns and two power iterations) from a fixed seed, so the same inputs give
    the same bytes; a full SVD of every SDXL projection would take minutes on two cores.
    The error is exact: the cut is an orthogonal projection of the delta, so the residual's
    energy is the delta's less the kept part's.
    """
    generator = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    residual = total = 0.0
    for name, weight in projections:  # one at a time: SDXL's 140 projections are 1.3 GB in float32
        delta = weight.double() @ state_map_g
        a, b, kept = _top_factors(delta, rank, generator)
        # norms, not squared copies: a weight-sized temporary per projection let glibc's heap
        # grow to 2.9 GB over SDXL's 140 (freed blocks were not reused or returned)
        energy = float(torch.linalg.vector_norm(delta)) ** 2
        total += energy
        residual += max(0.0, energy - kept)
        tensors[f"{prefix}.{name}.lora_A.weight"] = a.float().contiguous()
        tensors[f"{prefix}.{name}.lora_B.weight"] = b.float().contiguous()
    return Factors(tensors, (residual / total) ** 0.5 if total > 0 else 0.0)


_OVERSAMPLE = 16
_POWER_ITERATIONS = 2


def _top_factors(
    delta: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, energy), rank rows and columns, with B @ A the best rank-`rank` part of delta within
    the sketch, and energy its squared Frobenius norm (the kept singular values' squares: A's
    rows and B's columns' directions are orthonormal)."""
    rows, cols = delta.shape
    width = min(rank + _OVERSAMPLE, rows, cols)
    sketch = torch.randn(cols, width, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(delta @ sketch)
    for _ in range(_POWER_ITERATIONS):
        basis, _ = torch.linalg.qr(delta.T @ basis)
        basis, _ = torch.linalg.qr(delta @ basis)
    u, sigma, vh = torch.linalg.svd(basis.T @ delta, full_matrices=False)
    kept = min(rank, sigma.shape[0])
    a = torch.zeros(rank, cols, dtype=torch.float64)
    b = torch.zeros(rows, rank, dtype=torch.float64)
    a[:kept] = vh[:kept]
    b[:, :kept] = (basis @ u[:, :kept]) * sigma[:kept]
    return a, b, float(sigma[:kept].pow(2).sum())
