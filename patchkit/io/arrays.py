"""Safetensors tensor bytes as numpy arrays, for the paths that must not pay torch's import.

`patchkit apply` reads a few hundred attention weights and writes them back; importing
torch for that would cost more than the arithmetic. numpy has no bfloat16, so BF16 is
widened to float32 by shifting its bits, and narrowed with round-to-nearest-even, NaN
becoming 0xFFFF, which is what torch's vectorised CPU conversion does: a model fused
here is bit-identical to one fused by torch (a test holds both to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchkit.core.dtypes import DTYPES, FLOATS
from patchkit.io.safetensors_io import read_raw

# same-width numpy types holding each safetensors dtype's bytes (BF16 as its raw bits)
STORAGE: dict[str, np.dtype[Any]] = {name: np.dtype(d.storage) for name, d in DTYPES.items()}


def storage_dtype(dtype: str) -> np.dtype[Any]:
    try:
        return STORAGE[dtype]
    except KeyError:
        raise ValueError(f"tensor dtype {dtype} is not supported here") from None


def stored(raw: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """The bytes as an array of their storage type (read-only view when `raw` is bytes)."""
    return np.frombuffer(raw, dtype=storage_dtype(dtype)).reshape(tuple(shape))


def to_float32(raw: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """A float tensor's bytes as a new float32 array."""
    if dtype not in FLOATS:
        raise ValueError(f"tensor dtype {dtype} is not a float type")
    values = stored(raw, dtype, shape)
    if dtype == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def from_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values cast once to `dtype`, as an array of its storage type."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "BF16":
        return bfloat16_bits(values)
    if dtype not in FLOATS:
        raise ValueError(f"tensor dtype {dtype} is not a float type")
    with np.errstate(over="ignore"):  # out of range becomes ±inf, as torch's cast does
        return values.astype(storage_dtype(dtype))


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even; NaN becomes 0xFFFF as in torch on CPU."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):  # only NaN payloads can wrap, and those are replaced below
        rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    rounded[np.isnan(values)] = 0xFFFF
    return rounded


def read_float32(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a small safetensors file (a patch) as float32 arrays, by name."""
    return {name: to_float32(raw.data, raw.dtype, raw.shape) for name, raw in read_raw(path).items()}
