"""Reading a patch file: its header checked, its manifest validated, its tensors' id recomputed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.manifest import MANIFEST_KEY, parse_manifest
from patchkit.core.patch_id import PatchHasher
from patchkit.errors import TrustError
from patchkit.io.safetensors_io import Header, read_header

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PatchFile:
    path: Path
    header: Header
    manifest: dict[str, Any]
    patch_id: str  # recomputed from the tensor bytes, not read from the manifest

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


def file_patch_id(path: Path, header: Header) -> str:
    hasher = PatchHasher()
    for name in sorted(header.tensors):
        info = header.tensors[name]
        start = header.data_start + info.begin
        hasher.add(name, info.dtype, info.shape, _chunks(path, start, header.data_start + info.end), info.nbytes)
    return hasher.patch_id


def read_patch(path: Path) -> PatchFile:
    header = read_header(path)
    patch_id = file_patch_id(path, header)
    manifest = parse_manifest(header.metadata.get(MANIFEST_KEY), str(path), patch_id=patch_id)
    return PatchFile(path, header, manifest, patch_id)


def read_intact_patch(path: Path) -> PatchFile:
    """read_patch, refusing a file whose tensors no longer hash to its manifest's patch id."""
    patch = read_patch(path)
    if not patch.id_matches:
        raise TrustError(
            f"{path}: its tensors do not match the patch id in its manifest",
            hint="the patch was changed after it was written; fetch it again",
        )
    return patch
