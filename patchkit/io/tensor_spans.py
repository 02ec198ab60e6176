"""Where each model tensor's bytes lie on disk, so they can be hashed, copied or replaced without loading.

A span names one diffusers-keyed tensor by file, byte range, dtype and shape. A diffusers
folder maps one to one; a single-file checkpoint is mapped by patchkit.backend.single_file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from patchkit.core.dtypes import DTYPES
from patchkit.core.fingerprint import HASHED_COMPONENTS, canonical_key, is_hashed_key
from patchkit.core.ldm_layout import (
    OPENCLIP_COMPONENTS,
    TEXT_ENCODER_PREFIXES,
    UNET_PREFIX,
    openclip_keys_from_ldm,
    unet_key_from_ldm,
)
from patchkit.io import arrays
from patchkit.io import pipeline_folder as pf
from patchkit.io.safetensors_io import Header, read_header

if TYPE_CHECKING:
    import torch

TORCH_NAMES = {name: d.torch for name, d in DTYPES.items()}


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (torch imported only by callers that need tensors)."""
    import torch

    found: torch.dtype = getattr(torch, TORCH_NAMES[dtype])
    return found


@dataclass(frozen=True)
class TensorSpan:
    file: Path
    key: str  # the tensor's name inside `file`
    dtype: str
    shape: tuple[int, ...]  # the shape of the diffusers tensor
    start: int  # absolute offset of its first byte in `file`
    nbytes: int
    transposed: bool = False  # stored as the transpose of the diffusers tensor (OpenCLIP's text_projection)


# component -> canonical diffusers key -> span
ModelSpans = dict[str, dict[str, TensorSpan]]


def header_spans(path: Path, header: Header) -> dict[str, TensorSpan]:
    """Every tensor of one safetensors file, by its own key."""
    spans = {}
    for key, info in header.tensors.items():
        spans[key] = TensorSpan(path, key, info.dtype, info.shape, header.data_start + info.begin, info.nbytes)
    return spans


def folder_spans(folder: Path) -> ModelSpans:
    """The hashed components of a diffusers pipeline folder."""
    spans: ModelSpans = {}
    for component in pf.present_components(folder):
        if component not in HASHED_COMPONENTS:
            continue
        mapped = spans.setdefault(component, {})
        for path in pf.weight_files(folder, component):
            for key, span in header_spans(path, read_header(path)).items():
                if is_hashed_key(key):
                    mapped[canonical_key(component, key)] = span
    return spans


class SpanReader:
    """Positional reads of span bytes (pread: no shared file offset, so threads may share it).

    Reads go through small buffers rather than a memory map: mapped file pages count toward
    the process's resident set, and hashing a 2 GB model must not look like a 2 GB process.
    """

    _CHUNK = 8 << 20

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        # hashing threads race to open a file first; the loser's descriptor would never be
        # closed, and a leaked descriptor pins a deleted checkpoint's gigabytes on disk
        self._opening = threading.Lock()

    def _fd(self, path: Path) -> int:
        with self._opening:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def raw(self, span: TensorSpan) -> bytes:
        data = os.pread(self._fd(span.file), span.nbytes, span.start)
        if len(data) != span.nbytes:
            raise OSError(f"{span.file}: ended inside tensor {span.key!r}")
        return data

    def chunks(self, span: TensorSpan) -> Iterator[bytes]:
        fd, end = self._fd(span.file), span.start + span.nbytes
        for offset in range(span.start, end, self._CHUNK):
            yield os.pread(fd, min(self._CHUNK, end - offset), offset)

    def sha256(self, span: TensorSpan) -> str:
        """The digest of the diffusers tensor's bytes (transposed back where it is stored transposed)."""
        digest = hashlib.sha256()
        if span.transposed:
            digest.update(self.canonical_bytes(span))
        else:
            for block in self.chunks(span):
                digest.update(block)
        return digest.hexdigest()

    def array(self, span: TensorSpan) -> np.ndarray:
        """The diffusers tensor in its storage type (BF16 as raw bits), transposed back where stored transposed."""
        stored = arrays.stored(self.raw(span), span.dtype, span.shape[::-1] if span.transposed else span.shape)
        return np.ascontiguousarray(stored.T) if span.transposed else stored

    def tensor(self, span: TensorSpan) -> torch.Tensor:
        """The diffusers tensor as a torch tensor (a copy)."""
        import torch

        data = bytearray(self.canonical_bytes(span))
        dtype = torch_dtype(span.dtype)
        flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return flat.reshape(span.shape)

    def canonical_bytes(self, span: TensorSpan) -> bytes:
        """The bytes of the diffusers tensor: the raw span, except where it is stored transposed."""
        if not span.transposed:
            return self.raw(span)
        return self.array(span).tobytes()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def span_floats(span: TensorSpan, raw: bytes) -> np.ndarray:
    """The span's bytes (already read) as the diffusers tensor, in a new float32 array."""
    shape = span.shape[::-1] if span.transposed else span.shape
    values = arrays.to_float32(raw, span.dtype, shape)
    return np.ascontiguousarray(values.T) if span.transposed else values


def iter_spans(spans: ModelSpans) -> Iterator[tuple[str, str, TensorSpan]]:
    for component, mapped in spans.items():
        for key, span in mapped.items():
            yield component, key, span


def single_file_spans(path: Path, header: Header, configs: Mapping[str, Mapping[str, Any]], family: str) -> ModelSpans:
    """Byte spans, under diffusers names, of a single-file checkpoint's UNet and text encoders.

    Mapped by core.ldm_layout's inverse of the single-file layout, so nothing of diffusers is
    imported; a test checks the result against diffusers' own converters for every family.
    """
    stored = header_spans(path, header)
    spans: ModelSpans = {"unet": {}}
    for key, span in stored.items():
        if key.startswith(UNET_PREFIX):
            name = unet_key_from_ldm(key[len(UNET_PREFIX) :], configs["unet"])
            if name is not None:
                spans["unet"][name] = span
    for component in ("text_encoder", "text_encoder_2"):
        prefix = TEXT_ENCODER_PREFIXES.get((family, component))
        if prefix is None or component not in configs:
            continue
        mapped = spans.setdefault(component, {})
        config = configs[component]
        projection = "CLIPTextModelWithProjection" in config.get("architectures", [])
        for key, span in stored.items():
            if not key.startswith(prefix):
                continue
            inner = key[len(prefix) :]
            if (family, component) not in OPENCLIP_COMPONENTS:
                if is_hashed_key(inner):
                    mapped[canonical_key(component, inner)] = span
                continue
            for name, part in openclip_keys_from_ldm(inner, int(config["num_hidden_layers"]), projection):
                mapped[name] = _openclip_part(span, name, part)
    return spans


def _openclip_part(span: TensorSpan, name: str, part: int | None) -> TensorSpan:
    if part is not None:  # one third of the fused q/k/v rows: a contiguous byte range
        size = span.nbytes // 3
        return replace(span, shape=(span.shape[0] // 3, *span.shape[1:]), start=span.start + part * size, nbytes=size)
    if name == "text_projection.weight":  # OpenCLIP stores it transposed
        return replace(span, shape=span.shape[::-1], transposed=True)
    return span
