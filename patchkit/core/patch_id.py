"""The patch id: one SHA-256 over a patch's tensors, independent of how the file is laid out.

    digest = SHA-256( "patchkit-patch-id/1\\n"
                      + for each tensor, by its PEFT name in sorted order:
                          name "\\n" dtype "\\n" shape as "d0,d1,..." "\\n" u64le(byte count) bytes )

The header, its metadata (the manifest itself included) and the order of the data section
play no part, so rewriting a manifest, or a writer that orders tensors differently,
leaves the id unchanged, while any change to a tensor's name, type, shape or value changes it.

The same deltas in the kohya layout (`lora_unet_..._to_k.lora_down.weight`, what A1111 and
ComfyUI read) have the same id: a kohya name is hashed under the PEFT name it was made from
(core/lora_names.py), and a module's `.alpha` equal to its rank, which only restates PEFT's
scale of 1, is not hashed. Any other alpha changes the delta, so it is hashed, as
`<module>.alpha`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from patchkit.core.fingerprint import dtype_name, tensor_bytes
from patchkit.core.lora_names import kohya_module, peft_name
from patchkit.errors import CorruptFileError, UsageError

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


def hashed_names(shapes: Mapping[str, Sequence[int]], alpha: Callable[[str], float]) -> dict[str, str]:
    """{name hashed: tensor name} for a patch's tensors, sorted by the hashed name.

    `shapes` gives every tensor's shape; `alpha(name)` reads a scalar `.alpha` tensor's value,
    asked only for kohya alphas. Two tensors that would be hashed under one name (a file that
    mixes layouts) are refused: such a file has no single meaning."""
    hashed: dict[str, str] = {}
    for name in shapes:
        module = kohya_module(name)
        if module is not None and name.endswith(".alpha"):
            down = shapes.get(name.removesuffix(".alpha") + ".lora_down.weight")
            if down and len(shapes[name]) == 0 and alpha(name) == float(down[0]):
                continue  # alpha = rank: the scale of 1 that PEFT means without saying
            key = f"{module}.alpha"
        else:
            key = peft_name(name)
        if key in hashed:
            raise CorruptFileError(
                f"tensors {hashed[key]!r} and {name!r} are the same weight in two layouts",
                hint="a patch holds one layout: rewrite it with `patchkit export`",
            )
        hashed[key] = name
    return dict(sorted(hashed.items()))


def patch_id_of(tensors: Mapping[str, torch.Tensor]) -> str:
    hasher = PatchHasher()
    names = hashed_names({k: tuple(v.shape) for k, v in tensors.items()}, lambda k: float(tensors[k].item()))
    for key, name in names.items():
        data = tensor_bytes(tensors[name])
        hasher.add(key, dtype_name(tensors[name].dtype), tensors[name].shape, [data], len(data))
    return hasher.patch_id


def check_unique(ids: Sequence[str], labels: Sequence[str], *, hint: str) -> None:
    """Refuse the same patch twice (by id, whatever its file is called): merge, stack and apply alike.
    Applied twice, its delta would count double while the provenance looked like two patches."""
    seen: dict[str, str] = {}
    for patch_id, label in zip(ids, labels, strict=True):
        if patch_id in seen:
            raise UsageError(f"{label} is given twice (same patch id as {seen[patch_id]})", hint=hint)
        seen[patch_id] = label
