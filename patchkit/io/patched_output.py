"""Patched checkpoints on disk: written in the input's layout, with provenance, and nothing to undo them.

A single file keeps its tensors at their offsets and gains the provenance in its metadata
(`patchkit.applied`); a folder gets the same provenance in the rewritten weight files and
in `patchkit.json`. The original bytes of the replaced ranges never go into the output: a
released checkpoint must not carry what restores the concept it removed. They go to a
separate revert file (io/revert_data.py) when asked for, and `revert` writes them back:
the result is byte-identical to the base.

Outputs of patchkit before 0.2 embedded the revert data (`__patchkit_revert__/...` U8
tensors in a single file, `patchkit.revert.safetensors` in a folder); `revert` still reads
it from there, and a folder copy never carries it on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.canonical import canonical_json
from patchkit.core.jsonread import parse_json
from patchkit.errors import CorruptFileError, UsageError
from patchkit.io.atomic import atomic_path
from patchkit.io.regular import read_capped
from patchkit.io.revert_data import SINGLE_FILE, Originals, split
from patchkit.io.rewrite import check_free_space, data_length, edited_header, link_or_copy, write_file
from patchkit.io.safetensors_io import read_header, read_raw

PROVENANCE_KEY = "patchkit.applied"
PROVENANCE_VERSION = 1  # of the record below; readers refuse versions they do not know
PROVENANCE_FILE = "patchkit.json"
REVERT_FILE = "patchkit.revert.safetensors"
REVERT_PREFIX = "__patchkit_revert__/"
MAX_PROVENANCE_BYTES = 16 << 20  # a record of a few patches is a few kB
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
    if not path.exists():
        return None
    return _parse(read_capped(path, MAX_PROVENANCE_BYTES, hint="restore it from the release"), path)


def _parse(text: str | bytes, source: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = parse_json(text, str(source), hint="the file was edited", error=CorruptFileError)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{source}: its patchkit provenance is not JSON", hint="the file was edited") from exc
    if "base_fingerprint" not in data:
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


# Metadata that describes the base's exact bytes (ModelSpec's hash_sha256, kohya's and A1111's
# model hashes): copied into a patched file it would describe bytes the file no longer holds,
# and a loader that checks it would call the file corrupt.
_STALE_KEY = re.compile(r"hash|sha256|sha1|md5|checksum", re.IGNORECASE)
TITLE_KEY = "modelspec.title"


def released_metadata(metadata: Mapping[str, str], provenance: Mapping[str, Any]) -> dict[str, str]:
    """The base's metadata as the patched file must say it: hashes of the base's bytes dropped,
    the title naming the patches, the provenance added."""
    kept = {k: v for k, v in metadata.items() if not _STALE_KEY.search(k)}
    if TITLE_KEY in kept:
        names = ", ".join(f"{p['name']}@{p['version']}" for p in provenance.get("patches", []))
        kept[TITLE_KEY] = f"{kept[TITLE_KEY]} (patched: {names})"
    kept[PROVENANCE_KEY] = canonical_json(provenance)
    return kept


def _write_edited(source: Path, destination: Path, edits: FileEdits | None, provenance: dict[str, Any],
                  copied: Copied | None, durable: bool) -> int:  # fmt: skip
    header = read_header(source)
    metadata = released_metadata(header.metadata, provenance)
    head = edited_header(header, {}, metadata)
    ranges = {} if edits is None else {o - header.data_start: new for o, (_, new) in edits.ranges.items()}
    return write_file(destination, head, source, header.data_start, data_length(header), ranges, [], copied,
                      durable=durable)  # fmt: skip


def write_single_file(edits: FileEdits, output: Path, provenance: dict[str, Any], *,
                      copied: Copied | None = None, durable: bool = True) -> int:  # fmt: skip
    check_free_space(output.parent, edits.path.stat().st_size + (1 << 20))
    with atomic_path(output, durable=durable) as tmp:
        return _write_edited(edits.path, tmp, edits, provenance, copied, durable)


def _folder_files(folder: Path) -> list[Path]:
    skip = {PROVENANCE_FILE, REVERT_FILE}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in skip)


def write_folder(source: Path, output: Path, edits: list[FileEdits], provenance: dict[str, Any], *,
                 link: bool, copied: Copied | None = None, durable: bool = True) -> tuple[int, int]:  # fmt: skip
    """Copy or link every file of `source`, rewriting the edited weight files; (bytes written, files linked)."""
    by_path = {e.path: e for e in edits}
    files = _folder_files(source)
    check_free_space(output.parent, sum(e.path.stat().st_size for e in edits) + (1 << 20))
    written = linked = 0
    with atomic_path(output, durable=durable) as tmp:
        tmp.mkdir()
        for file in files:
            relative = file.relative_to(source)
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if file in by_path:
                written += _write_edited(file.resolve(), target, by_path[file], provenance, copied, durable)
            else:
                # hard links only for weights: configs are tiny, and a linked config edited in place
                # would change the base too
                linked += link_or_copy(file.resolve(), target, link=link and file.suffix == ".safetensors")
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return written, linked


def legacy_originals(patched: Path, layout: str) -> Originals | None:
    """The revert data an output of patchkit < 0.2 carries inside itself, or None."""
    if layout == "single_file":
        entries = _u8_entries(patched, REVERT_PREFIX)
        if not entries:
            return None
        return split({SINGLE_FILE + "::" + k.removeprefix(REVERT_PREFIX): v for k, v in entries.items()}, str(patched))
    revert_file = patched / REVERT_FILE
    return split(_u8_entries(revert_file, ""), str(revert_file)) if revert_file.is_file() else None


def _original_length(head: bytes) -> int:
    entries = json.loads(head[8:])
    return max((int(v["data_offsets"][1]) for k, v in entries.items() if k != "__metadata__"), default=0)


def _u8_entries(path: Path, prefix: str) -> dict[str, bytes]:
    return {name: raw.data for name, raw in read_raw(path, lambda name: name.startswith(prefix)).items()}


def _restore(source: Path, destination: Path, original: tuple[bytes, dict[int, bytes]]) -> None:
    head, ranges = original
    header = read_header(source)
    write_file(destination, head, source, header.data_start, _original_length(head), ranges)


_WRONG_DATA = "pass the revert file that `patchkit apply --revert-data` wrote for this very output"


def revert_single_file(patched: Path, output: Path, originals: Originals) -> None:
    if set(originals) != {SINGLE_FILE}:
        raise UsageError(f"the revert data is for a folder, but {patched} is a single file", hint=_WRONG_DATA)
    check_free_space(output.parent, patched.stat().st_size)
    with atomic_path(output) as tmp:
        _restore(patched, tmp, originals[SINGLE_FILE])


def revert_folder(patched: Path, output: Path, originals: Originals, *, link: bool) -> None:
    files = {file.relative_to(patched).as_posix(): file for file in _folder_files(patched)}
    missing = sorted(set(originals) - set(files))
    if missing:
        raise UsageError(f"the revert data names {missing[0]!r}, which {patched} does not hold", hint=_WRONG_DATA)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for relative, file in files.items():
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative in originals:
                _restore(file, target, originals[relative])
            else:
                link_or_copy(file.resolve(), target, link=link and file.suffix == ".safetensors")
