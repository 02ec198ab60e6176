"""The base fingerprint: one SHA-256 that names a model's weights, whatever file holds them.

Definition (version 2), also in docs/fingerprint.md:

    leaf(tensor)  = sha256(raw little-endian bytes of the tensor)
    fingerprint   = sha256( b"patchkit-fingerprint/2\\n"
                            + for component in ("unet", "text_encoder", "text_encoder_2") that the model has,
                                for key in sorted(diffusers state-dict keys of that component, text-encoder
                                                  keys in the classic "text_model.*" form, see canonical_key),
                                  skipping keys that end in "position_ids" (index buffers, not weights):
                                    utf8(f"{component}/{key}\\t{dtype}\\t{shape}\\t{nbytes}\\t{leaf hex}\\n") )

Keys are diffusers names, so a single-file checkpoint and a diffusers folder holding the
same tensors give the same fingerprint. The VAE and the tokenizer are not hashed: patches
never touch them, and users swap VAEs freely.

Version 2 hashes each tensor on its own (a Merkle list) so that tensors hash in parallel,
a patched model's fingerprint needs only its touched tensors re-hashed, and a mismatch can
name the tensors that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from patchkit.core.dtypes import BY_TORCH_NAME

if TYPE_CHECKING:
    import torch

FINGERPRINT_VERSION = 2
HASHED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_MAGIC = b"patchkit-fingerprint/2\n"


@dataclass(frozen=True)
class Leaf:
    """One hashed tensor: where it sits in the model and the SHA-256 of its bytes."""

    component: str
    key: str  # canonical diffusers key
    dtype: str  # safetensors name: F32, F16, ...
    shape: tuple[int, ...]
    nbytes: int
    digest: str

    @property
    def line(self) -> str:
        return f"{self.component}/{self.key}\t{self.dtype}\t{list(self.shape)}\t{self.nbytes}\t{self.digest}\n"


def canonical_key(component: str, key: str) -> str:
    """Text-encoder keys in the classic `text_model.*` form, whatever transformers version saved them.

    transformers >= 5.6 saves CLIPTextModel without the `text_model.` prefix; every SD
    checkpoint before it has the prefix. The fingerprint must not depend on which one wrote the file.
    """
    if component.startswith("text_encoder") and not key.startswith(("text_model.", "text_projection.")):
        return "text_model." + key
    return key


def is_hashed_key(key: str) -> bool:
    return not key.endswith("position_ids")


def dtype_name(dtype: torch.dtype) -> str:
    return BY_TORCH_NAME.get(str(dtype), str(dtype))


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def combine(leaves: Iterable[Leaf]) -> str:
    """The fingerprint of a model from its leaves, in the defined order whatever order they come in."""
    rank = {name: i for i, name in enumerate(HASHED_COMPONENTS)}
    ordered = sorted(leaves, key=lambda leaf: (rank[leaf.component], leaf.key))
    digest = hashlib.sha256(_MAGIC)
    for leaf in ordered:
        digest.update(leaf.line.encode())
    return digest.hexdigest()
