"""Revert data: the original bytes a patched checkpoint replaced, kept apart from the release.

A released checkpoint must not carry what would restore the concept it removed, so `apply`
never writes these bytes into OUT. With `--revert-data FILE` it writes them to FILE, which
the release engineer keeps private: one U8 tensor per replaced range (`FILE::OFFSET`, the
offset in that weight file's data section) plus each edited file's original header
(`FILE::header`), where FILE is the weight file's path inside the folder, or "." for a
single-file checkpoint. The metadata key `patchkit.revert` binds it to the base and output
fingerprints; OUT's provenance records the revert file's SHA-256, so `revert` can tell a
revert file that belongs to another output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.canonical import canonical_json
from patchkit.core.jsonread import parse_json
from patchkit.errors import CorruptFileError
from patchkit.io.rewrite import raw_header
from patchkit.io.safetensors_io import RawTensor, read_header, read_raw
from patchkit.io.tensors_out import serialize

REVERT_KEY = "patchkit.revert"
REVERT_VERSION = 1
SINGLE_FILE = "."  # the name a single-file checkpoint's own weight file has in revert data

# relative weight file -> (its original header bytes, data-section offset -> original bytes)
Originals = dict[str, tuple[bytes, dict[int, bytes]]]


@dataclass(frozen=True)
class Replaced:
    """One weight file's replaced ranges: absolute offset -> original bytes."""

    path: Path  # the base's weight file
    name: str  # its name in revert data (SINGLE_FILE, or its path inside the folder)
    ranges: Mapping[int, bytes]


def encode(replaced: Sequence[Replaced], binding: Mapping[str, Any]) -> bytes:
    """The whole revert file: original headers and ranges, and the binding in its metadata."""
    tensors: dict[str, RawTensor] = {}
    for file in replaced:
        header = read_header(file.path)
        head = raw_header(file.path)
        tensors[f"{file.name}::header"] = RawTensor("U8", (len(head),), head)
        for offset, original in file.ranges.items():
            tensors[f"{file.name}::{offset - header.data_start}"] = RawTensor("U8", (len(original),), original)
    record = {"schema_version": REVERT_VERSION, **binding}
    return serialize(tensors, {REVERT_KEY: canonical_json(record)})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class RevertData:
    binding: dict[str, Any]  # schema_version, base_fingerprint, output_fingerprint, layout
    originals: Originals
    sha256: str


def split(entries: Mapping[str, bytes], source: str) -> Originals:
    """`FILE::header` / `FILE::OFFSET` entries grouped by weight file."""
    originals: Originals = {}
    heads = {k.removesuffix("::header"): v for k, v in entries.items() if k.endswith("::header")}
    for name, head in heads.items():
        originals[name] = (head, {})
    for key, data in entries.items():
        name, _, part = key.rpartition("::")
        if part == "header":
            continue
        if name not in originals or not part.isdigit():
            raise CorruptFileError(f"{source}: revert entry {key!r} belongs to no file", hint="the file was edited")
        originals[name][1][int(part)] = data
    return originals


def read(path: Path) -> RevertData:
    """A revert file written by `apply --revert-data`, checked before any byte of it is trusted."""
    hint = "pass the revert file that `patchkit apply --revert-data` wrote for this output"
    header = read_header(path)
    text = header.metadata.get(REVERT_KEY)
    if text is None:
        raise CorruptFileError(f"{path} is not patchkit revert data (no {REVERT_KEY} metadata)", hint=hint)
    binding = parse_json(text, f"{path}: {REVERT_KEY}", hint=hint, error=CorruptFileError)
    if binding.get("schema_version") != REVERT_VERSION:
        raise CorruptFileError(
            f"{path}: revert data of schema_version {binding.get('schema_version')!r}; this patchkit reads "
            f"{REVERT_VERSION}",
            hint="upgrade patchkit, or revert with the version that applied it",
        )
    raws = read_raw(path)
    if any(raw.dtype != "U8" for raw in raws.values()):
        raise CorruptFileError(f"{path}: revert data holds a tensor that is not raw bytes", hint=hint)
    entries = {name: raw.data for name, raw in raws.items()}
    return RevertData(binding, split(entries, str(path)), sha256(path.read_bytes()))
