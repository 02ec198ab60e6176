"""The patch id: one SHA-256 over a patch's tensors, independent of how the file is laid out.

    digest = SHA-256( "patchkit-patch-id/1\\n"
                      + for each tensor name in sorted order:
                          name "\\n" dtype "\\n" shape as "d0,d1,..." "\\n" u64le(byte count) bytes )

The header, its metadata (the manifest itself included) and the order of the data section
play no part, so rewriting a manifest, or a writer that orders tensors differently,
leaves the id unchanged, while any change to a tensor's name, type, shape or value changes it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from patchkit.core.fingerprint import dtype_name, tensor_bytes
from patchkit.errors import UsageError

if TYPE_CHECKING:
    import torch

PREFIX = "sha256:"
_MAGIC = b"patchkit-patch-id/1\n"


class PatchHasher:
    """Feed tensors in sorted-name order (the caller's duty: checked), then read `patch_id`."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256(_MAGIC)
        self._last: str | None = None

    def add(self, name: str, dtype: str, shape: Iterable[int], chunks: Iterable[bytes], size: int) -> None:
        if self._last is not None and name <= self._last:
            raise ValueError("tensors must be added in sorted, unique name order")
        self._last = name
        dims = ",".join(str(int(d)) for d in shape)
        self._digest.update(f"{name}\n{dtype}\n{dims}\n".encode() + struct.pack("<Q", size))
        for chunk in chunks:
            self._digest.update(chunk)

    @property
    def patch_id(self) -> str:
        return PREFIX + self._digest.hexdigest()


def patch_id_of(tensors: Mapping[str, torch.Tensor]) -> str:
    hasher = PatchHasher()
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name])
        hasher.add(name, dtype_name(tensors[name].dtype), tensors[name].shape, [data], len(data))
    return hasher.patch_id


def check_unique(ids: Sequence[str], labels: Sequence[str], *, hint: str) -> None:
    """Refuse the same patch twice (by id, whatever its file is called): merge, stack and apply alike.
    Applied twice, its delta would count double while the provenance looked like two patches."""
    seen: dict[str, str] = {}
    for patch_id, label in zip(ids, labels, strict=True):
        if patch_id in seen:
            raise UsageError(f"{label} is given twice (same patch id as {seen[patch_id]})", hint=hint)
        seen[patch_id] = label
