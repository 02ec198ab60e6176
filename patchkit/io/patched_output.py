"""Patched checkpoints on disk: written in the input's layout, with provenance and revert data.

A single file keeps its tensors at their offsets, gains the provenance in its metadata
(`patchkit.applied`), and, unless told not to, carries the original bytes of every
replaced range and the original header as U8 tensors named `__patchkit_revert__/...`,
which loaders skip as unknown keys. A folder gets the same provenance in the rewritten
weight files and in `patchkit.json`, and the revert data in `patchkit.revert.safetensors`.
Reverting writes the original bytes back: the result is byte-identical to the base.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.canonical import canonical_json
from patchkit.errors import CorruptFileError, UsageError
from patchkit.io.atomic import atomic_path
from patchkit.io.rewrite import check_free_space, data_length, edited_header, link_or_copy, raw_header, write_file
from patchkit.io.safetensors_io import RawTensor, read_header, read_raw
from patchkit.io.tensors_out import save_tensors

PROVENANCE_KEY = "patchkit.applied"
PROVENANCE_VERSION = 1  # of the record below; readers refuse versions they do not know
PROVENANCE_FILE = "patchkit.json"
REVERT_FILE = "patchkit.revert.safetensors"
REVERT_PREFIX = "__patchkit_revert__/"
Copied = Callable[[int], None]


@dataclass(frozen=True)
class FileEdits:
    """Byte ranges of one weight file to replace: absolute offset -> (original bytes, new bytes)."""

    path: Path
    ranges: dict[int, tuple[bytes, bytes]]


def read_single_file_provenance(path: Path) -> dict[str, Any] | None:
    text = read_header(path).metadata.get(PROVENANCE_KEY)
    return _parse(text, path) if text is not None else None


def read_folder_provenance(folder: Path) -> dict[str, Any] | None:
    path = folder / PROVENANCE_FILE
    return _parse(path.read_text(), path) if path.is_file() else None


def _parse(text: str, source: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorruptFileError(f"{source}: its patchkit provenance is not JSON", hint="the file was edited") from exc
    if not isinstance(data, dict) or "base_fingerprint" not in data:
        raise CorruptFileError(f"{source}: its patchkit provenance is malformed", hint="the file was edited")
    version = data.get("schema_version")
    if version != PROVENANCE_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > PROVENANCE_VERSION
        raise CorruptFileError(
            f"{source}: its patchkit provenance has schema_version {version!r}; this patchkit reads "
            f"{PROVENANCE_VERSION}",
            hint="upgrade patchkit to read it" if newer else "the file was edited; take the checkpoint from its source",
        )
    return data


def _revert_entries(edits: FileEdits, prefix: str) -> dict[str, bytes]:
    header = read_header(edits.path)
    entries = {f"{prefix}header": raw_header(edits.path)}
    for offset, (original, _) in edits.ranges.items():
        entries[f"{prefix}{offset - header.data_start}"] = original
    return entries


def _write_edited(source: Path, destination: Path, edits: FileEdits | None, provenance: dict[str, Any],
                  appended: Mapping[str, bytes], copied: Copied | None, durable: bool) -> int:  # fmt: skip
    header = read_header(source)
    metadata = {**header.metadata, PROVENANCE_KEY: canonical_json(provenance)}
    head = edited_header(header, {k: len(v) for k, v in appended.items()}, metadata)
    ranges = {} if edits is None else {o - header.data_start: new for o, (_, new) in edits.ranges.items()}
    tail = [appended[name] for name in sorted(appended)]
    return write_file(destination, head, source, header.data_start, data_length(header), ranges, tail, copied,
                      durable=durable)  # fmt: skip


def write_single_file(edits: FileEdits, output: Path, provenance: dict[str, Any], *, revertible: bool,
                      copied: Copied | None = None, durable: bool = True) -> int:  # fmt: skip
    appended = _revert_entries(edits, REVERT_PREFIX) if revertible else {}
    needed = edits.path.stat().st_size + sum(len(v) for v in appended.values()) + (1 << 20)
    check_free_space(output.parent, needed)
    with atomic_path(output, durable=durable) as tmp:
        return _write_edited(edits.path, tmp, edits, provenance, appended, copied, durable)


def _folder_files(folder: Path) -> list[Path]:
    skip = {PROVENANCE_FILE, REVERT_FILE}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in skip)


def write_folder(source: Path, output: Path, edits: list[FileEdits], provenance: dict[str, Any], *, revertible: bool,
                 link: bool, copied: Copied | None = None, durable: bool = True) -> tuple[int, int]:  # fmt: skip
    """Copy or link every file of `source`, rewriting the edited weight files; (bytes written, files linked)."""
    by_path = {e.path: e for e in edits}
    files = _folder_files(source)
    check_free_space(output.parent, sum(e.path.stat().st_size for e in edits) + (1 << 20))
    written = linked = 0
    revert: dict[str, RawTensor] = {}
    with atomic_path(output, durable=durable) as tmp:
        tmp.mkdir()
        for file in files:
            relative = file.relative_to(source)
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if file in by_path:
                written += _write_edited(file.resolve(), target, by_path[file], provenance, {}, copied, durable)
                for name, data in _revert_entries(by_path[file], f"{relative.as_posix()}::").items():
                    revert[name] = RawTensor("U8", (len(data),), data)
            else:
                # hard links only for weights: configs are tiny, and a linked config edited in place
                # would change the base too
                linked += link_or_copy(file.resolve(), target, link=link and file.suffix == ".safetensors")
        if revertible:
            save_tensors(tmp / REVERT_FILE, revert)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return written, linked


def _revert_ranges(entries: Mapping[str, bytes], prefix: str) -> tuple[bytes, dict[int, bytes]]:
    head = entries.get(f"{prefix}header")
    if head is None:
        raise UsageError("the patched checkpoint carries no revert data", hint="it was written with --no-revert")
    ranges = {
        int(k.removeprefix(prefix)): v for k, v in entries.items() if k.startswith(prefix) and k != f"{prefix}header"
    }
    return head, ranges


def _original_length(head: bytes) -> int:
    entries = json.loads(head[8:])
    return max((int(v["data_offsets"][1]) for k, v in entries.items() if k != "__metadata__"), default=0)


def _u8_entries(path: Path, prefix: str) -> dict[str, bytes]:
    return {name: raw.data for name, raw in read_raw(path, lambda name: name.startswith(prefix)).items()}


def revert_single_file(patched: Path, output: Path) -> None:
    head, ranges = _revert_ranges(_u8_entries(patched, REVERT_PREFIX), REVERT_PREFIX)
    header = read_header(patched)
    check_free_space(output.parent, patched.stat().st_size)
    with atomic_path(output) as tmp:
        write_file(tmp, head, patched, header.data_start, _original_length(head), ranges)


def revert_folder(patched: Path, output: Path, *, link: bool) -> None:
    revert_file = patched / REVERT_FILE
    if not revert_file.is_file():
        raise UsageError(f"{patched} carries no {REVERT_FILE}", hint="it was written with --no-revert")
    entries = _u8_entries(revert_file, "")
    edited = {name.split("::")[0] for name in entries}
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for file in _folder_files(patched):
            relative = file.relative_to(patched).as_posix()
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative in edited:
                head, ranges = _revert_ranges(entries, f"{relative}::")
                header = read_header(file)
                write_file(target, head, file, header.data_start, _original_length(head), ranges)
            else:
                link_or_copy(file.resolve(), target, link=link and file.suffix == ".safetensors")
