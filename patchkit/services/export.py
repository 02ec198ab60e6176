"""`patchkit export`: a patch in the other LoRA key layout (kohya for A1111/ComfyUI, PEFT for diffusers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchkit.core.layouts import kohya_sibling
from patchkit.core.patch_id import patch_id_of
from patchkit.errors import UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.patch_file import read_intact_patch
from patchkit.services.patches import peft_tensors, write_patch

FORMATS = ("kohya", "peft")


@dataclass(frozen=True)
class ExportResult:
    output: Path
    format: str
    tensors: int
    patch_id: str
    bytes: int


def export(patch: Path, fmt: str, output: Path, *, force: bool = False) -> ExportResult:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}")
    check_output_path(output, force=force)
    parsed = read_intact_patch(patch)
    manifest = parsed.manifest
    current = manifest.get("format", {}).get("keys", "peft")
    if current == fmt:
        raise UsageError(
            f"{patch} is already in the {fmt} layout", hint=f"copy it, or export --format {FORMATS[fmt == 'kohya']}"
        )
    tensors = peft_tensors(patch, manifest)
    if fmt == "kohya":
        from patchkit.backend.kohya import peft_to_kohya

        tensors = peft_to_kohya(tensors)
    new_manifest = dict(manifest, patch_id=patch_id_of(tensors), format={**manifest.get("format", {}), "keys": fmt})
    rank = int(manifest.get("format", {}).get("rank", 4))
    resolution = int(parsed.header.metadata.get("modelspec.resolution", "512x512").split("x")[0])
    write_patch(output, tensors, new_manifest, family=manifest["base"]["family"], rank=rank, resolution=resolution,
                base_name=manifest["base"]["reference"])  # fmt: skip
    return ExportResult(output, fmt, len(tensors), new_manifest["patch_id"], output.stat().st_size)


def write_kohya_twin(patch: Path, *, with_it: Sequence[Path | None] = ()) -> Path:
    """The same patch in the kohya layout beside it, where `registry add` looks for it
    (core/layouts.py). The caller has refused an existing twin already. If the twin cannot be
    written, neither it nor `patch` (nor the files `with_it`, written with the patch) is kept."""
    target = kohya_sibling(patch)
    try:
        export(patch, "kohya", target, force=True)
    except BaseException:
        for written in (patch, *with_it):
            if written is not None:
                written.unlink(missing_ok=True)
        raise
    return target
