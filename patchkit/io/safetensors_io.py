"""Reading safetensors files defensively: validate the header before trusting any offset."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit.core.dtypes import ITEM_SIZES
from patchkit.errors import CorruptFileError, InputError, PickleRefusedError
from patchkit.io.regular import not_a_file

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own cap on header size
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class TensorInfo:
    """One header entry, checked: dtype name, shape and byte offsets relative to the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def to_json(self) -> dict[str, object]:
        """The entry as the safetensors header spells it."""
        return {"dtype": self.dtype, "shape": list(self.shape), "data_offsets": [self.begin, self.end]}


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


@dataclass(frozen=True)
class RawTensor:
    """A tensor as the file stores it: safetensors dtype name, shape and little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def read_raw(path: Path, wanted: Callable[[str], bool] = lambda _: True) -> dict[str, RawTensor]:
    """The tensors of a (small) safetensors file whose names are `wanted`, as stored, without torch."""
    header = read_header(path)
    tensors = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for name, info in header.tensors.items():
            if not wanted(name):
                continue
            data = os.pread(fd, info.nbytes, header.data_start + info.begin)
            tensors[name] = RawTensor(info.dtype, info.shape, data)
    finally:
        os.close(fd)
    return tensors


def looks_like_pickle(path: Path) -> bool:
    """True for torch pickles by suffix, or by content (zip archive or pickle protocol byte)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"


def refuse_pickle(path: Path, *, allowable: bool = False) -> None:
    """Refuse a pickle. `allowable`: the caller reads models and so offers --allow-pickle;
    elsewhere (patches, revert files) no flag makes a pickle acceptable, and none is named."""
    if allowable:
        raise PickleRefusedError(
            f"{path} is a pickle, which can run code when loaded: refused without --allow-pickle",
            hint="convert it to .safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)",
        )
    raise PickleRefusedError(
        f"{path} is a pickle, which can run code when loaded: refused",
        hint="patchkit reads only .safetensors here; save the tensors with safetensors.torch.save_file",
    )


def read_header(path: Path) -> Header:
    """Parse and check a safetensors header; raise CorruptFileError naming what is wrong."""
    reason = not_a_file(path)
    if reason is not None:
        raise InputError(f"{path} {reason}", hint="check the path")
    size = path.stat().st_size
    fix = "the file is damaged or incomplete: download or export it again"
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            if looks_like_pickle(path):
                refuse_pickle(path)
            raise CorruptFileError(f"{path} is too short to be safetensors ({size} bytes)", hint=fix)
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            if looks_like_pickle(path):
                refuse_pickle(path)
            raise CorruptFileError(f"{path}: header length {length} exceeds the file size {size}", hint=fix)
        raw = handle.read(length)
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:  # two __metadata__ (two manifests), or one tensor named twice
        raise CorruptFileError(f"{path}: header names {exc.args[0]!r} twice", hint=fix) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: header is not valid JSON ({exc.__class__.__name__})", hint=fix) from exc
    except RecursionError as exc:
        raise CorruptFileError(f"{path}: header JSON is nested too deeply", hint=fix) from exc
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path}: header is not a JSON object", hint=fix)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptFileError(f"{path}: __metadata__ is not a map of strings to strings", hint=fix)
    data_size = size - 8 - length
    end = 0
    tensors: dict[str, TensorInfo] = {}
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):  # fmt: skip
            raise CorruptFileError(f"{path}: tensor {name!r} has no valid data_offsets", hint=fix)
        expected = _byte_size(info)
        if expected is None or expected != offsets[1] - offsets[0]:
            raise CorruptFileError(
                f"{path}: tensor {name!r} has a dtype or shape that does not match its data_offsets", hint=fix
            )
        end = max(end, offsets[1])
        tensors[name] = TensorInfo(str(info["dtype"]), tuple(info["shape"]), offsets[0], offsets[1])
    if end > data_size:
        raise CorruptFileError(
            f"{path} is truncated: tensors need {end} data bytes but only {data_size} are present", hint=fix
        )
    _check_layout(path, tensors, data_size, fix)
    return Header(tensors=tensors, metadata=dict(metadata), data_start=8 + length)


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def _check_layout(path: Path, tensors: Mapping[str, TensorInfo], data_size: int, fix: str) -> None:
    """What the reference parser refuses: tensors that overlap, leave holes, or leave bytes after them.
    Each would let two readers see different data in the same file."""
    cursor = 0
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if info.begin < cursor:
            raise CorruptFileError(f"{path}: tensor {name!r} overlaps the one before it", hint=fix)
        if info.begin > cursor:
            raise CorruptFileError(
                f"{path}: {info.begin - cursor} bytes before tensor {name!r} belong to none", hint=fix
            )
        cursor = info.end
    if cursor != data_size:
        raise CorruptFileError(f"{path}: {data_size - cursor} bytes after the last tensor belong to none", hint=fix)


def _byte_size(info: dict[str, object]) -> int | None:
    shape, item = info.get("shape"), ITEM_SIZES.get(str(info.get("dtype")))
    if item is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    count = 1
    for dim in shape:
        count *= dim
    return count * item


class LazyTensors(Mapping[str, "torch.Tensor"]):
    """A read-only mapping over one safetensors file that loads a tensor only when asked."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        read_header(path)
        self._path = path
        self._handle = safe_open(str(path), framework="pt")
        self._keys = list(self._handle.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        tensor: torch.Tensor = self._handle.get_tensor(key)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
