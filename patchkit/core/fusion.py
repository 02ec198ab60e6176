"""LoRA maths for fusing patches into weights: which module each factor pair targets, and the delta.

Patch keys follow the PEFT/diffusers layout `<component>.<module>.lora_A.weight` (down,
rank x in) and `...lora_B.weight` (up, out x rank), with an optional kohya-style
`<component>.<module>.alpha` scalar; without it the scale is 1, as diffusers assumes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import torch

# apply reads factors as numpy arrays (no torch import); merge and the trainer hand in tensors
Matrix = Union[np.ndarray, "torch.Tensor"]

_FACTOR = re.compile(r"(?P<component>[a-z_0-9]+)\.(?P<module>.+)\.lora_(?P<side>[AB])\.weight")
_ALPHA = re.compile(r"(?P<component>[a-z_0-9]+)\.(?P<module>.+)\.alpha")


class PatchFormatError(ValueError):
    """A patch whose tensor names or shapes are not a LoRA layout patchkit can fuse."""


@dataclass(frozen=True)
class LoraFactors:
    component: str  # unet, text_encoder, ...
    module: str  # e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k
    down: Matrix  # A: rank x in
    up: Matrix  # B: out x rank
    alpha: float | None

    @property
    def weight_key(self) -> str:
        return f"{self.module}.weight"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def out_in(self) -> tuple[int, int]:
        return int(self.up.shape[0]), int(self.down.shape[1])

    def delta(self) -> np.ndarray:
        """B @ A in float32, times alpha / rank where the patch gives an alpha."""
        delta: np.ndarray = _float32(self.up) @ _float32(self.down)
        if self.alpha is not None:
            delta *= np.float32(self.alpha / self.rank)
        return delta


def _float32(matrix: Matrix) -> np.ndarray:
    if isinstance(matrix, np.ndarray):
        return matrix.astype(np.float32, copy=False)
    return matrix.detach().float().numpy()  # through torch: numpy cannot read a bfloat16 tensor


def lora_factors(tensors: Mapping[str, Matrix]) -> list[LoraFactors]:
    """Pair up every module's A and B (sorted by module), or say which key breaks the layout."""
    sides: dict[tuple[str, str], dict[str, Matrix]] = {}
    alphas: dict[tuple[str, str], float] = {}
    for key, tensor in tensors.items():
        if match := _FACTOR.fullmatch(key):
            sides.setdefault((match["component"], match["module"]), {})[match["side"]] = tensor
        elif match := _ALPHA.fullmatch(key):
            alphas[(match["component"], match["module"])] = float(tensor.reshape(-1)[0])
        else:
            raise PatchFormatError(f"tensor {key!r} is not a LoRA factor (<component>.<module>.lora_A/B.weight)")
    factors = []
    for (component, module), pair in sorted(sides.items()):
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise PatchFormatError(f"module {component}.{module} has no {missing}.weight")
        down, up = pair["A"], pair["B"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise PatchFormatError(
                f"module {component}.{module}: lora_A {list(down.shape)} and lora_B {list(up.shape)} do not pair"
            )
        factors.append(LoraFactors(component, module, down, up, alphas.get((component, module))))
    return factors


def fuse(weight: np.ndarray, deltas: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """weight + sum(scale * delta) in float32; the caller casts the result back to the stored dtype once."""
    fused = np.array(weight, dtype=np.float32)
    for delta, scale in deltas:
        fused += np.float32(scale) * delta
    return fused
