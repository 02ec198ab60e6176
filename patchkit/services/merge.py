"""`merge`: several patches into one, exactly (concat) or re-factored (svd), after a conflict check."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit.core import merge as merge_maths
from patchkit.core.fusion import LoraFactors, PatchFormatError, lora_factors
from patchkit.core.layouts import kohya_sibling
from patchkit.core.manifest import ConceptRecord, new_manifest
from patchkit.core.patch_id import check_unique, patch_id_of
from patchkit.core.progress import Progress
from patchkit.core.scales import checked_scale
from patchkit.errors import Conflict, ConflictError, CorruptFileError, UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.patch_file import PatchFile, read_intact_patch
from patchkit.services.export import write_kohya_twin
from patchkit.services.patches import created_at, peft_tensors, write_patch

METHODS = ("concat", "svd", "fuse")


@dataclass(frozen=True)
class MergeResult:
    output: Path
    manifest: dict[str, Any]
    method: str
    rank: int
    module_errors: dict[str, float]  # module -> relative Frobenius error (svd)
    overall_error: float
    warnings: list[Conflict]
    seconds: float
    bytes: int
    drifts: list[Any] = field(default_factory=list)  # fuse: each parent's drift, stacked and fused
    kohya: Path | None = None  # the same patch in the kohya layout, beside it

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "patch_id": self.manifest["patch_id"], "method": self.method,
                "rank": self.rank, "overall_error": self.overall_error, "module_errors": self.module_errors,
                "warnings": [c.message for c in self.warnings], "bytes": self.bytes,
                "drifts": [d.to_json() for d in self.drifts],
                "kohya": str(self.kohya) if self.kohya else None}  # fmt: skip


@dataclass(frozen=True)
class _Parent:
    patch: PatchFile
    factors: list[LoraFactors]

    @property
    def manifest(self) -> dict[str, Any]:
        return self.patch.manifest


def _read(path: Path) -> _Parent:
    patch = read_intact_patch(path)
    try:
        return _Parent(patch, lora_factors(peft_tensors(path, patch.manifest)))
    except PatchFormatError as exc:
        raise CorruptFileError(f"{path}: {exc}", hint="patchkit merges LoRA patches in the PEFT layout") from exc


def check_conflicts(parents: Sequence[_Parent], weights: Sequence[float], strict: bool) -> list[Conflict]:
    """Raise ConflictError with every fatal conflict; return the warnings."""
    check_unique([p.patch.patch_id for p in parents], [str(p.patch.path) for p in parents],
                 hint="give each patch once; use --weights to scale")  # fmt: skip
    names = [f"{p.manifest['name']}@{p.manifest['version']}" for p in parents]
    found = merge_maths.concept_conflicts([p.manifest for p in parents])
    if not any(c.fatal for c in found):  # patches for another base may not even have the same shapes
        found += merge_maths.delta_conflicts([p.factors for p in parents], names, weights)
    fatal = [c for c in found if c.fatal or strict]
    if fatal:
        hint = "drop one of the clashing patches" + (
            "" if any(c.fatal for c in fatal) else ", or merge without --strict"
        )
        raise ConflictError(f"{len(fatal)} conflict(s) between the patches: {fatal[0].message}", hint, list(found))
    return found


def _default_name(parents: Sequence[_Parent]) -> str:
    joined = "merge-" + "+".join(p.manifest["name"] for p in parents)
    return re.sub(r"[^a-z0-9._-]", "-", joined.lower())[:100]


def _concepts(parents: Sequence[_Parent]) -> list[ConceptRecord]:
    """Each parent's concepts once; they come from validated manifests, so they have the record's shape."""
    seen: dict[tuple[str, str, str | None], ConceptRecord] = {}
    for p in parents:
        for c in p.manifest["concepts"]:
            record: ConceptRecord = {"name": c["name"], "category": c["category"], "action": c["action"]}
            if "token" in c:
                record["token"] = c["token"]
            if "target" in c:
                record["target"] = c["target"]
            if "context" in c:
                record["context"] = c["context"]
            if "mscore" in c:
                record["mscore"] = c["mscore"]
            seen.setdefault((c["name"], c["action"], c.get("target")), record)
    return list(seen.values())


def _resolution(patch: PatchFile) -> int:
    text = patch.header.metadata.get("modelspec.resolution", "512x512")
    return int(text.split("x")[0])


def merge(
    paths: Sequence[Path], output: Path, *, method: str = "concat", rank: int | None = None,
    weights: Sequence[float] | None = None, strict: bool = False, name: str | None = None, version: str = "1.0.0",
    force: bool = False, base: str | None = None, config: Path | None = None, progress: Progress | None = None,
    kohya: bool = False,
) -> MergeResult:  # fmt: skip
    started = time.perf_counter()
    if len(paths) < 2:
        raise UsageError("merge needs at least two patches", hint="patchkit merge A B [C...] -o M")
    if method not in METHODS:
        raise UsageError(f"unknown merge method {method!r}", hint=f"choose one of: {', '.join(METHODS)}")
    svd_rank = rank if method == "svd" else 0
    if svd_rank is None or (method == "svd" and svd_rank < 1):
        raise UsageError("--method svd needs --rank R (R >= 1)", hint="for example --rank 32")
    if method == "fuse" and base is None:
        raise UsageError("--method fuse needs the base model the patches were made for",
                         hint="patchkit merge A B --method fuse --base testbed -o M")  # fmt: skip
    weights = [checked_scale(w, "merge weight") for w in weights] if weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise UsageError(f"{len(weights)} weights for {len(paths)} patches", hint="give one weight per patch")
    check_output_path(output, force=force)
    if kohya:
        check_output_path(kohya_sibling(output), force=force)
    parents = []
    for i, path in enumerate(paths):
        parents.append(_read(path))
        if progress:
            progress("read", i + 1, len(paths), {})
    warnings = check_conflicts(parents, weights, strict)
    factors = [p.factors for p in parents]
    drifts: list[Any] = []
    if method == "concat":
        modules = merge_maths.concat(factors, weights)
    elif method == "fuse" and base is not None:
        from patchkit.services.fuse_merge import fused_modules

        named = [(f"{p.manifest['name']}@{p.manifest['version']}", p.manifest, p.factors) for p in parents]
        modules, drifts = fused_modules(base, named, weights, config=config)
    else:
        modules = merge_maths.svd(factors, weights, svd_rank)
    tensors = {}
    for m in modules:
        tensors[f"{m.component}.{m.module}.lora_A.weight"] = m.down
        tensors[f"{m.component}.{m.module}.lora_B.weight"] = m.up
    out_rank = max(int(m.down.shape[0]) for m in modules)
    first = parents[0].manifest
    concepts = _concepts(parents)
    module_names = sorted({m for p in parents for m in p.manifest.get("format", {}).get("modules", [])})
    manifest = new_manifest(
        patch_id=patch_id_of(tensors),
        name=name or _default_name(parents),
        version=version,
        base=first["base"],
        concepts=concepts,
        method={"name": "merge", "settings": {"method": method, "rank": out_rank, "weights": weights,
                                               **({"drift": [d.to_json() for d in drifts]} if drifts else {})}},
        layout={"keys": "peft", "rank": out_rank, "modules": module_names},
        created_at=created_at(),
        parents=[{"patch_id": p.patch.patch_id, "name": p.manifest["name"], "version": p.manifest["version"],
                  "weight": w} for p, w in zip(parents, weights, strict=True)],
        scores_inherited=True if any("mscore" in c for c in concepts) else None,
    )  # fmt: skip
    write_patch(output, tensors, manifest, family=first["base"]["family"], rank=out_rank,
                resolution=_resolution(parents[0].patch), base_name=first["base"]["reference"])  # fmt: skip
    twin = write_kohya_twin(output) if kohya else None
    errors = {f"{m.component}.{m.module}": m.relative_error for m in modules}
    return MergeResult(output, manifest, method, out_rank, errors, merge_maths.overall_error(modules), warnings,
                       time.perf_counter() - started, output.stat().st_size, drifts, twin)  # fmt: skip
