"""Tensor dtypes by their safetensors names: one table for sizes, torch names and numpy storage.

Keyed by the names safetensors headers use, so reading and hashing files never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str  # as a safetensors header spells it
    itemsize: int  # bytes per element
    torch: str  # the torch attribute: torch.float16, ...
    storage: str  # the numpy dtype that holds the raw elements (BF16: its 16 bits as uint16)
    floating: bool


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("F64", 8, "float64", "<f8", True),
        DType("F32", 4, "float32", "<f4", True),
        DType("F16", 2, "float16", "<f2", True),
        DType("BF16", 2, "bfloat16", "<u2", True),
        DType("I64", 8, "int64", "<i8", False),
        DType("I32", 4, "int32", "<i4", False),
        DType("I16", 2, "int16", "<i2", False),
        DType("I8", 1, "int8", "i1", False),
        DType("U8", 1, "uint8", "u1", False),
        DType("BOOL", 1, "bool", "?", False),
    )
}
# safetensors also defines these; patchkit reads their sizes but never their values
ITEM_SIZES: dict[str, int] = {name: d.itemsize for name, d in DTYPES.items()} | {
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip
# str(torch dtype) -> safetensors name
BY_TORCH_NAME: dict[str, str] = {f"torch.{d.torch}": name for name, d in DTYPES.items()}
FLOATS: tuple[str, ...] = tuple(name for name, d in DTYPES.items() if d.floating)
