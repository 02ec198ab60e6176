"""A weight difference as LoRA factors: truncated SVD, with the error it costs said in numbers.

Erasers such as ESD and UCE write whole edited weights, not a LoRA. The difference from the
base, W_edit - W_base, is factored as B @ A with the top singular vectors: the best rank-r
approximation in the Frobenius norm (Eckart-Young), so the error reported is the least any
rank-r patch could have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

MAX_AUTO_RANK = 128


@dataclass(frozen=True)
class Spectrum:
    """One module's difference, factored once: enough to cut it at any rank."""

    u: torch.Tensor  # [out, k]
    s: torch.Tensor  # [k]
    vh: torch.Tensor  # [k, in]

    def error(self, rank: int) -> float:
        """Relative Frobenius error of the rank-`rank` cut: ||D - D_r|| / ||D||."""
        total = float(torch.sum(self.s.double() ** 2))
        return 0.0 if total == 0.0 else float(torch.sqrt(torch.sum(self.s[rank:].double() ** 2) / total))

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lora_A [rank, in], lora_B [out, rank]), the singular values split evenly between them."""
        root = torch.sqrt(self.s[:rank])
        return (root[:, None] * self.vh[:rank]).contiguous(), (self.u[:, :rank] * root[None, :]).contiguous()


def spectrum(delta: torch.Tensor) -> Spectrum:
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)  # float64: the cut, not rounding, is the error
    return Spectrum(u.float(), s.float(), vh.float())


def smallest_rank(spectra: Mapping[str, Spectrum], tolerance: float, cap: int = MAX_AUTO_RANK) -> int | None:
    """The least rank at which every module's relative error is within `tolerance`, or None past `cap`."""
    for rank in range(1, cap + 1):
        if all(s.error(rank) <= tolerance for s in spectra.values()):
            return rank
    return None


def overall_error(spectra: Mapping[str, Spectrum], rank: int) -> float:
    """The relative Frobenius error of the whole patch (all modules together) at `rank`."""
    total = sum(float(torch.sum(s.s.double() ** 2)) for s in spectra.values())
    lost = sum(float(torch.sum(s.s[rank:].double() ** 2)) for s in spectra.values())
    return 0.0 if total == 0.0 else (lost / total) ** 0.5
