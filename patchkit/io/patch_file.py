"""Reading a patch file: its header checked, its manifest validated, its tensors' id recomputed."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchkit.core.dtypes import FLOATS
from patchkit.core.manifest import MANIFEST_KEY, parse_manifest
from patchkit.core.patch_id import PatchHasher, hashed_names
from patchkit.errors import CorruptFileError, InputError, TrustError
from patchkit.io.arrays import STORAGE, stored, to_float32
from patchkit.io.safetensors_io import Header, read_header

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PatchFile:
    path: Path
    header: Header
    manifest: dict[str, Any]
    patch_id: str  # recomputed from the tensor bytes, not read from the manifest
    nonfinite: tuple[str, ...] = ()  # tensors holding NaN or Inf
    zero: frozenset[str] = frozenset()  # tensors whose every element is zero

    @property
    def id_matches(self) -> bool:
        return self.manifest.get("patch_id") == self.patch_id


def _chunks(path: Path, start: int, end: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            block = handle.read(min(_CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block


class _Content:
    """What one pass over a tensor's bytes learns besides its hash: NaN/Inf anywhere, all zero."""

    def __init__(self, dtype: str) -> None:
        self.dtype, self.finite, self.zero = dtype, True, True

    def watch(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._look(chunk)
            yield chunk

    def _look(self, chunk: bytes) -> None:
        if self.dtype not in FLOATS:
            self.zero = self.zero and not any(chunk)
            return
        values = np.frombuffer(chunk, dtype=STORAGE[self.dtype])
        if self.dtype == "BF16":  # raw 16 bits: exponent all ones is Inf or NaN; sign ignored for zero
            self.finite = self.finite and not bool(((values & 0x7F80) == 0x7F80).any())
            self.zero = self.zero and not bool((values & 0x7FFF).any())
        else:
            self.finite = self.finite and bool(np.isfinite(values).all())
            self.zero = self.zero and not bool(values.any())


def _scalar(path: Path, header: Header, name: str) -> float:
    """A one-element tensor's value (a kohya `.alpha`), NaN where it is not one number."""
    info = header.tensors[name]
    if info.dtype not in STORAGE or info.nbytes > 8 or math.prod(info.shape) != 1:
        return float("nan")
    raw = b"".join(_chunks(path, header.data_start + info.begin, header.data_start + info.end))
    if len(raw) != info.nbytes:
        return float("nan")
    read = to_float32 if info.dtype in FLOATS else stored
    return float(read(raw, info.dtype, info.shape).reshape(-1)[0])


def _scan(path: Path, header: Header) -> tuple[str, tuple[str, ...], frozenset[str]]:
    """The patch id, and which tensors are non-finite or all zero, in one read of the bytes."""
    hasher = PatchHasher()
    nonfinite, zero = [], set()
    names = hashed_names({k: v.shape for k, v in header.tensors.items()}, lambda k: _scalar(path, header, k))
    for key, name in names.items():
        info = header.tensors[name]
        start = header.data_start + info.begin
        content = _Content(info.dtype)
        chunks = content.watch(_chunks(path, start, header.data_start + info.end))
        hasher.add(key, info.dtype, info.shape, chunks, info.nbytes)
        if not content.finite:
            nonfinite.append(name)
        if content.zero:
            zero.add(name)
    return hasher.patch_id, tuple(nonfinite), frozenset(zero)


def file_patch_id(path: Path, header: Header) -> str:
    return _scan(path, header)[0]


def read_patch(path: Path) -> PatchFile:
    header = read_header(path)
    patch_id, nonfinite, zero = _scan(path, header)
    manifest = parse_manifest(header.metadata.get(MANIFEST_KEY), str(path), patch_id=patch_id)
    return PatchFile(path, header, manifest, patch_id, nonfinite, zero)


_FACTOR = re.compile(r"(?P<module>.+)\.(lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight|diff)")


def read_intact_patch(path: Path) -> PatchFile:
    """read_patch, refusing a file that no patchkit verb should take: tensors that no longer hash
    to the manifest's patch id, NaN or Inf in any tensor, or a delta that changes nothing."""
    patch = read_patch(path)
    if not patch.id_matches:
        kohya = patch.manifest.get("format", {}).get("keys") == "kohya"
        raise TrustError(
            f"{path}: its tensors do not match the patch id in its manifest",
            hint="the patch was changed after it was written; fetch it again"
            + (" (a kohya file from before the layout-independent id: export its PEFT file again)" if kohya else ""),
        )
    if patch.nonfinite:
        raise CorruptFileError(
            f"{path}: tensor {patch.nonfinite[0]!r} holds NaN or Inf ({len(patch.nonfinite)} such tensors)",
            hint="a patch with non-finite weights would break every model it touches; make it again",
        )
    modules: dict[str, bool] = {}  # module -> its delta can be non-zero
    for name in patch.header.tensors:
        if match := _FACTOR.fullmatch(name):
            modules[match["module"]] = modules.get(match["module"], True) and name not in patch.zero
    if not any(modules.values()):
        what = "no tensors" if not patch.header.tensors else "only zero deltas"
        raise InputError(
            f"{path} holds {what}: applied, it would change nothing, yet its manifest would say it forgot "
            + ", ".join(repr(c.get("name")) for c in patch.manifest.get("concepts", [])),
            hint="a patch must carry the trained deltas; train it again (patchkit forget)",
        )
    return patch
