"""Low-rank adapters on chosen Linear layers, trained in place and exported in PEFT key format.

Our own small wrapper rather than peft's injection: it is deterministic for a seed, adds
nothing to the forward pass when disabled, and its export is exactly the diffusers/PEFT
LoRA layout that `load_lora_weights` reads (`unet.<module>.lora_A.weight` / `lora_B`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from patchkit.errors import UsageError


class LoRALinear(nn.Module):
    """`base(x) + (x A^T) B^T`; B starts at zero, so a fresh adapter changes nothing."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.enabled = True
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        with torch.no_grad():
            bound = 1 / math.sqrt(base.in_features)
            self.lora_A.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.enabled:
            out = out + (x @ self.lora_A.T) @ self.lora_B.T
        return out


class DeltaLinear(nn.Module):
    """`base(x) + x delta^T` with a full-size trainable delta (`--full`), exported by SVD."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.enabled = True
        self.delta = nn.Parameter(torch.zeros_like(base.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.enabled:
            out = out + x @ self.delta.T
        return out


Adapter = LoRALinear | DeltaLinear


def inject(
    model: nn.Module, suffixes: Sequence[str], rank: int, seed: int, *, full: bool = False
) -> dict[str, Adapter]:
    """Wrap every Linear whose qualified name ends with one of `suffixes`; returns name -> adapter."""
    generator = torch.Generator().manual_seed(seed)
    targets = [(n, m) for n, m in model.named_modules() if n.endswith(tuple(suffixes)) and isinstance(m, nn.Linear)]
    if not targets:
        raise UsageError(f"no layer ends with {', '.join(suffixes)}", hint="check the model's attention layer names")
    limit = min(min(m.in_features, m.out_features) for _, m in targets)
    if rank < 1 or rank > limit:
        raise UsageError(
            f"rank {rank} is outside 1..{limit} for these layers", hint=f"pass --rank between 1 and {limit}"
        )
    adapters = {}
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        adapter: Adapter = DeltaLinear(module) if full else LoRALinear(module, rank, generator)
        setattr(parent, child, adapter)
        adapters[name] = adapter
    return adapters


def remove(model: nn.Module, adapters: dict[str, Adapter]) -> None:
    for name, adapter in adapters.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, adapter.base)


@contextmanager
def disabled(adapters: dict[str, Adapter]) -> Iterator[None]:
    """The frozen model, for distillation targets."""
    for adapter in adapters.values():
        adapter.enabled = False
    try:
        yield
    finally:
        for adapter in adapters.values():
            adapter.enabled = True


def parameters(adapters: dict[str, Adapter]) -> list[nn.Parameter]:
    return [p for a in adapters.values() for p in a.parameters() if p.requires_grad]


def factorise(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-`rank` factors (Eckart-Young): delta ~ B @ A, with the singular values in B."""
    u, sigma, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    b = (u[:, :rank] * sigma[:rank]).to(delta.dtype)
    a = vh[:rank].to(delta.dtype)
    return a.contiguous(), b.contiguous()


def peft_state(
    adapters: dict[str, Adapter], rank: int, prefix: str = "unet"
) -> tuple[dict[str, torch.Tensor], float | None]:
    """PEFT-format tensors, and for full deltas the overall relative Frobenius error of their SVD export."""
    out = {}
    residual = total = 0.0
    for name, adapter in sorted(adapters.items()):
        if isinstance(adapter, DeltaLinear):
            delta = adapter.delta.detach()
            a, b = factorise(delta, rank)
            residual += float((delta - b @ a).pow(2).sum())
            total += float(delta.pow(2).sum())
        else:
            a, b = adapter.lora_A.detach().clone(), adapter.lora_B.detach().clone()
        out[f"{prefix}.{name}.lora_A.weight"] = a.contiguous()
        out[f"{prefix}.{name}.lora_B.weight"] = b.contiguous()
    full = any(isinstance(a, DeltaLinear) for a in adapters.values())
    return out, ((residual / total) ** 0.5 if total > 0 else 0.0) if full else None
