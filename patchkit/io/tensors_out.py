"""Writing safetensors files: deterministic bytes, streamed, atomic.

The safetensors library writes its metadata in hash-map order, which differs from run to
run; patches must be byte-identical for the same inputs and seed, so we write the format
ourselves: a JSON header with sorted keys (padded with spaces to 8 bytes, as the format
allows), then each tensor's bytes in key order. Readers see an ordinary safetensors file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

from patchkit.core.canonical import canonical_json
from patchkit.core.fingerprint import dtype_name, tensor_bytes
from patchkit.io.atomic import atomic_path
from patchkit.io.safetensors_io import RawTensor

if TYPE_CHECKING:
    import torch

# RawTensor lets torch-free paths (apply's revert data) write files too
Storable = Union["torch.Tensor", RawTensor]


def _layout(tensor: Storable) -> tuple[str, list[int], int]:
    if isinstance(tensor, RawTensor):
        return tensor.dtype, list(tensor.shape), len(tensor.data)
    return dtype_name(tensor.dtype), list(tensor.shape), tensor.numel() * tensor.element_size()


def _data(tensor: Storable) -> bytes:
    return tensor.data if isinstance(tensor, RawTensor) else tensor_bytes(tensor)


def header_bytes(tensors: Mapping[str, Storable], metadata: Mapping[str, str] | None = None) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    offset = 0
    for key in sorted(tensors):
        dtype, shape, size = _layout(tensors[key])
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = canonical_json(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def serialize(tensors: Mapping[str, Storable], metadata: Mapping[str, str] | None = None) -> bytes:
    return header_bytes(tensors, metadata) + b"".join(_data(tensors[k]) for k in sorted(tensors))


def save_tensors(path: Path, tensors: Mapping[str, Storable], metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` one tensor at a time via a temporary sibling: never half a file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(header_bytes(tensors, metadata))
        for key in sorted(tensors):
            handle.write(_data(tensors[key]))
