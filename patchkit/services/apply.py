"""`apply`: fuse patches into a checkpoint, streamed, atomic, with provenance and the data to revert.

The plan (every check, the fused tensors, both fingerprints) is made before anything is
written, so `stack add` can ask what an apply would produce without writing it.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchkit import TOOL
from patchkit.core.fingerprint import Leaf, combine
from patchkit.core.fusion import LoraFactors, PatchFormatError, fuse, lora_factors
from patchkit.core.patch_id import check_unique
from patchkit.core.progress import Progress
from patchkit.core.scales import checked_scale
from patchkit.errors import CorruptFileError, InputError, ModelMismatchError, OutputError, TrustError, UsageError
from patchkit.io import arrays, patched_output
from patchkit.io import revert_data as revert_data_io
from patchkit.io.atomic import check_output_path, write_bytes_atomic
from patchkit.io.patch_file import read_intact_patch
from patchkit.io.regular import not_a_file
from patchkit.io.tensor_spans import ModelSpans, SpanReader, TensorSpan, span_floats
from patchkit.models import refs, weights
from patchkit.services.signing import enforce_policy, signature_warning
from patchkit.services.sources import PatchSource
from patchkit.store.locations import require_signed_by_default


@dataclass(frozen=True)
class AppliedPatch:
    patch_id: str
    name: str
    version: str
    scale: float
    source: str
    base_fingerprint: str
    warning: str | None = None  # a signature that is there but does not verify (policy off)

    def record(self) -> dict[str, Any]:
        return {"patch_id": self.patch_id, "name": self.name, "version": self.version, "scale": self.scale,
                "source": self.source}  # fmt: skip


@dataclass(frozen=True)
class TensorEdit:
    span: TensorSpan
    original: bytes
    fused: bytes


@dataclass(frozen=True)
class ApplyPlan:
    base: refs.ModelRef
    base_fingerprint: str
    output_fingerprint: str
    patches: list[AppliedPatch]
    edits: list[TensorEdit]
    forced_mismatch: list[str] = field(default_factory=list)  # patches applied to another base under --ignore-base
    manifests: list[dict[str, Any]] = field(default_factory=list)
    factors: list[list[LoraFactors]] = field(default_factory=list)
    spans: ModelSpans | None = None  # where the base's tensors lie, as listed for the fingerprint

    def provenance(self, revert_sha256: str | None) -> dict[str, Any]:
        """What OUT records of itself. `revertible` says a revert file exists somewhere; its SHA-256
        lets `revert` refuse one written for another output. The original bytes are never here."""
        return {
            "schema_version": patched_output.PROVENANCE_VERSION,
            "base_fingerprint": self.base_fingerprint,
            "output_fingerprint": self.output_fingerprint,
            "patches": [p.record() for p in self.patches],
            "touched": len(self.edits),
            "revertible": revert_sha256 is not None,
            "revert_data_sha256": revert_sha256,
            "tool": TOOL,
        }


@dataclass(frozen=True)
class ApplyResult:
    output: Path
    layout: str
    base_fingerprint: str
    output_fingerprint: str
    patches: list[AppliedPatch]
    touched: int
    bytes_written: int
    linked_files: int
    seconds: float
    forced_mismatch: list[str]
    interference: list[str] = field(default_factory=list)  # one warning per patch the others move too far

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "layout": self.layout,
            "base_fingerprint": self.base_fingerprint,
            "output_fingerprint": self.output_fingerprint,
            "patches": [p.record() for p in self.patches],
            "touched_tensors": self.touched,
            "bytes_written": self.bytes_written,
            "linked_files": self.linked_files,
            "seconds": round(self.seconds, 3),
            "interference": self.interference,
        }


def read_provenance(ref: refs.ModelRef) -> dict[str, Any] | None:
    """What a patched checkpoint says was applied to it; None for a checkpoint patchkit did not write."""
    if ref.layout == "single_file":
        return patched_output.read_single_file_provenance(ref.weights)
    return patched_output.read_folder_provenance(ref.weights)


def resolve_base(reference: str, config: Path | None, allow_pickle: bool) -> refs.ModelRef:
    ref = refs.resolve(reference, config=config, allow_pickle=allow_pickle, bundled_config=True)
    if read_provenance(ref) is not None:
        raise UsageError(
            f"{reference} is already a patched checkpoint",
            hint="apply every patch to the original base in one call (or a stack), or `patchkit revert` it first",
        )
    return ref


def _load_patch(source: PatchSource, require_signed: bool) -> tuple[AppliedPatch, list[LoraFactors], dict[str, Any]]:
    patch = read_intact_patch(source.path)
    if source.pinned_id is not None and patch.patch_id != source.pinned_id:
        raise TrustError(
            f"{source.path} is not the patch its stack pins ({patch.patch_id[:23]}… where {source.pinned_id[:23]}…)",
            hint="put the pinned patch back, or re-make the stack: patchkit stack verify STACK BASE",
        )
    enforce_policy(source.path, require_signed)
    warning = None if require_signed else signature_warning(source.path)
    try:
        factors = lora_factors(_peft_arrays(source.path, patch.manifest))
    except (PatchFormatError, ValueError) as exc:
        hint = "patchkit applies LoRA patches in the PEFT layout"
        raise CorruptFileError(f"{source.path}: {exc}", hint=hint) from exc
    manifest = patch.manifest
    _check_declared(source.path, manifest, factors)
    scale = checked_scale(source.scale, f"the scale of {source.label or source.path.name}")
    applied = AppliedPatch(patch.patch_id, manifest["name"], manifest["version"], scale,
                           source.label or source.path.name,
                           manifest["base"]["fingerprint"], warning)  # fmt: skip
    return applied, factors, manifest


def _check_declared(path: Path, manifest: dict[str, Any], factors: list[LoraFactors]) -> None:
    """Every tensor must be of a module the manifest declares: the manifest is what was signed,
    reviewed and registered, so an undeclared text-encoder LoRA must not ride along unseen."""
    declared = tuple(manifest.get("format", {}).get("modules", []))
    for factor in factors:
        if factor.component != "unet" or not factor.module.endswith(declared):
            raise CorruptFileError(
                f"{path}: tensor module {factor.component}.{factor.module} is not among the modules its manifest "
                f"declares ({', '.join(declared) or 'none'})",
                hint="the file holds more than its manifest says; do not apply it, make it again",
            )


def _peft_arrays(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The patch's factors under PEFT names; only a kohya-layout patch needs torch (diffusers' converters)."""
    if manifest.get("format", {}).get("keys") == "kohya":
        from patchkit.services.patches import peft_tensors

        return dict(peft_tensors(path, manifest))
    return arrays.read_float32(path)


def _check_base(applied: AppliedPatch, path: Path, base: str, fingerprint: str, ignore_base: bool) -> bool:
    """True when the patch was made for another base and --ignore-base lets it through."""
    if applied.base_fingerprint == fingerprint:
        return False
    if ignore_base:
        return True
    raise ModelMismatchError(
        f"{path} was made for base {applied.base_fingerprint} but {base} is {fingerprint}",
        hint="apply it to the model it was made for (patchkit show PATCH), or pass --ignore-base if you know better",
    )


def _target(spans: ModelSpans, factors: LoraFactors, path: Path, base: str) -> TensorSpan:
    span = spans.get(factors.component, {}).get(factors.weight_key)
    if span is None:
        raise ModelMismatchError(
            f"{path}: module {factors.component}.{factors.module} is not in {base}",
            hint="the patch was made for another architecture; check patchkit show PATCH against patchkit info BASE",
        )
    if tuple(span.shape) != factors.out_in:
        raise ModelMismatchError(
            f"{path}: {factors.component}.{factors.weight_key} is {list(span.shape)} in {base} "
            f"but the patch changes a {list(factors.out_in)} weight",
            hint="the patch was made for another architecture (SD 1.x, 2.x and XL differ in width)",
        )
    return span


def _stored_bytes(values: np.ndarray, span: TensorSpan) -> bytes:
    """float32 values cast once to the span's dtype, laid out as the file stores them."""
    cast = arrays.from_float32(values, span.dtype)
    return (cast.T if span.transposed else cast).tobytes()


def plan_apply(
    base: refs.ModelRef,
    sources: Sequence[PatchSource],
    *,
    ignore_base: bool = False,
    require_signed: bool | None = None,
    progress: Progress | None = None,
) -> ApplyPlan:
    """Check every patch against `base` and fuse in memory; write nothing."""
    if not sources:
        raise UsageError("no patches to apply", hint="patchkit apply BASE PATCH [PATCH...] -o OUT")
    require = require_signed_by_default() if require_signed is None else require_signed
    loaded = [(_load_patch(s, require), s.path) for s in sources]
    check_unique([applied.patch_id for (applied, _, _), _ in loaded], [str(path) for _, path in loaded],
                 hint="give each patch once; use --scale to strengthen it")  # fmt: skip
    spans = weights.model_spans(base)
    leaves = weights.leaves(spans, progress, stage="fingerprint base")
    fingerprint = combine(leaves)
    forced = []
    deltas: dict[tuple[str, str], list[tuple[np.ndarray, float]]] = {}
    targets: dict[tuple[str, str], TensorSpan] = {}
    for (applied, factors, _), path in loaded:
        if _check_base(applied, path, base.reference, fingerprint, ignore_base):
            forced.append(path.name)
        for factor in factors:
            key = (factor.component, factor.weight_key)
            targets[key] = _target(spans, factor, path, base.reference)
            deltas.setdefault(key, []).append((factor.delta(), applied.scale))
    edits: dict[tuple[str, str], TensorEdit] = {}
    with SpanReader() as reader:
        for i, key in enumerate(sorted(targets)):
            span = targets[key]
            original = reader.raw(span)
            fused = fuse(span_floats(span, original), deltas[key])
            edits[key] = TensorEdit(span, original, _stored_bytes(fused, span))
            if progress:
                progress("fuse", i + 1, len(targets), {})
    out_leaves = [_edited_leaf(leaf, edits.get((leaf.component, leaf.key))) for leaf in leaves]
    return ApplyPlan(base, fingerprint, combine(out_leaves), [a for (a, _, _), _ in loaded], list(edits.values()),
                     forced, [m for (_, _, m), _ in loaded], [f for (_, f, _), _ in loaded], spans)  # fmt: skip


def _edited_leaf(leaf: Leaf, edit: TensorEdit | None) -> Leaf:
    if edit is None:
        return leaf
    canonical = edit.fused
    if edit.span.transposed:
        stored = arrays.stored(edit.fused, edit.span.dtype, edit.span.shape[::-1])
        canonical = stored.T.tobytes()
    return Leaf(leaf.component, leaf.key, leaf.dtype, leaf.shape, leaf.nbytes, hashlib.sha256(canonical).hexdigest())


def apply(
    base: str,
    sources: Sequence[PatchSource],
    output: Path,
    *,
    config: Path | None = None,
    allow_pickle: bool = False,
    ignore_base: bool = False,
    overwrite: bool = False,
    link: bool = True,
    revert_data: Path | None = None,
    require_signed: bool | None = None,
    expected_fingerprint: str | None = None,
    durable: bool = True,
    progress: Progress | None = None,
) -> ApplyResult:
    """Fuse `sources` into `base` and write `output` in the same layout, atomically (and fsynced when `durable`).

    `output` holds nothing from which the base can be restored. With `revert_data`, the
    original bytes go to that separate file instead (written first; removed again if the
    output cannot be written), for `revert` to use.
    """
    started = time.perf_counter()
    ref = resolve_base(base, config, allow_pickle)
    check_output(ref, output, overwrite=overwrite)
    if revert_data is not None:
        _check_revert_path(ref, output, revert_data, overwrite=overwrite)
    plan = plan_apply(ref, sources, ignore_base=ignore_base, require_signed=require_signed, progress=progress)
    if expected_fingerprint is not None and plan.output_fingerprint != expected_fingerprint:
        raise ModelMismatchError(
            f"applying would give fingerprint {plan.output_fingerprint}, not the {expected_fingerprint} recorded",
            hint="a patch or the base differs from when the stack was made: patchkit stack verify STACK BASE",
        )
    interfering = interference(plan)  # measured before writing: the states need only the base's text side
    written, linked = _write(plan, output, link=link, revert_data=revert_data, durable=durable, progress=progress)
    return ApplyResult(output, ref.layout, plan.base_fingerprint, plan.output_fingerprint, plan.patches,
                       len(plan.edits), written, linked, time.perf_counter() - started,
                       plan.forced_mismatch, interfering)  # fmt: skip


# Set from bench/stack.py's testbed pairs: closed-form pairs drift 4-7% and held; FMN pairs drift 19-56%,
# and in two of three one forget came back (noir in 0.19 and 0.56 of its images). A warning, not a verdict.
DRIFT_WARNING = 0.15


def interference(plan: ApplyPlan) -> list[str]:
    """One warning when the patches move each other's edits of their own targets by more than DRIFT_WARNING."""
    if len(plan.patches) < 2:
        return []
    from patchkit.services.fuse_merge import KnownBase, stacked_drifts

    parents = [(f"{p.name}@{p.version}", m, f) for p, m, f in zip(plan.patches, plan.manifests, plan.factors,
                                                                    strict=True)]  # fmt: skip
    known = KnownBase(plan.base_fingerprint, plan.spans) if plan.spans is not None else None
    drifts = stacked_drifts(plan.base, parents, [p.scale for p in plan.patches], known)
    if drifts is None or max(drifts) <= DRIFT_WARNING:
        return []
    moved = ", ".join(f"{name} {d:.0%}" for (name, _, _), d in zip(parents, drifts, strict=True) if d > DRIFT_WARNING)
    sources = " ".join(p.source for p in plan.patches)
    return [
        f"stacked, the patches move each other's edits of their own targets ({moved}): a forget may come "
        f"undone; `patchkit merge {sources} --method fuse --base BASE -o FUSED` re-fits them jointly"
    ]


def check_output(ref: refs.ModelRef, output: Path, *, overwrite: bool) -> None:
    """Refuse an output that is the base, lies inside it, or would hold it; then the usual checks."""
    base, target = ref.weights.resolve(), output.resolve()
    if target == base or base in target.parents or target in base.parents:
        raise OutputError(f"{output} would overwrite the base model {ref.reference}", hint="choose another -o path")
    if ref.layout == "single_file" and output.suffix != ".safetensors":
        raise UsageError(
            f"{output}: a single-file checkpoint is written as .safetensors", hint="name it OUT.safetensors"
        )
    check_output_path(output, force=overwrite)


def _file_edits(plan: ApplyPlan) -> list[patched_output.FileEdits]:
    by_file: dict[Path, dict[int, tuple[bytes, bytes]]] = {}
    for edit in plan.edits:
        by_file.setdefault(edit.span.file, {})[edit.span.start] = (edit.original, edit.fused)
    return [patched_output.FileEdits(path, ranges) for path, ranges in sorted(by_file.items())]


def _check_revert_path(ref: refs.ModelRef, output: Path, revert_data: Path, *, overwrite: bool) -> None:
    target, out, base = revert_data.resolve(), output.resolve(), ref.weights.resolve()
    if target in (out, base) or out in target.parents or base in target.parents:
        raise OutputError(
            f"--revert-data {revert_data} would sit inside the output or the base",
            hint="keep it apart from the release, e.g. --revert-data private/OUT.revert.safetensors",
        )
    check_output_path(revert_data, force=overwrite)


def _replaced(plan: ApplyPlan, edits: list[patched_output.FileEdits]) -> list[revert_data_io.Replaced]:
    def name(path: Path) -> str:
        if plan.base.layout == "single_file":
            return revert_data_io.SINGLE_FILE
        return path.relative_to(plan.base.weights).as_posix()

    return [revert_data_io.Replaced(e.path, name(e.path), {o: old for o, (old, _) in e.ranges.items()}) for e in edits]


def _write(plan: ApplyPlan, output: Path, *, link: bool, revert_data: Path | None, durable: bool,
           progress: Progress | None) -> tuple[int, int]:  # fmt: skip
    edits = _file_edits(plan)
    revert_sha256 = None
    if revert_data is not None:
        binding = {"base_fingerprint": plan.base_fingerprint, "output_fingerprint": plan.output_fingerprint,
                   "layout": plan.base.layout}  # fmt: skip
        encoded = revert_data_io.encode(_replaced(plan, edits), binding)
        revert_sha256 = revert_data_io.sha256(encoded)
        write_bytes_atomic(revert_data, encoded, durable=durable)
    try:
        return _write_output(plan, edits, output, plan.provenance(revert_sha256), link, durable, progress)
    except BaseException:
        if revert_data is not None:  # no revert file for an output that was never written
            revert_data.unlink(missing_ok=True)
        raise


def _write_output(plan: ApplyPlan, edits: list[patched_output.FileEdits], output: Path, record: dict[str, Any],
                  link: bool, durable: bool, progress: Progress | None) -> tuple[int, int]:  # fmt: skip
    total = sum(e.path.stat().st_size for e in edits)
    done = [0]

    def copied(nbytes: int) -> None:
        done[0] += nbytes
        if progress:
            progress("write", min(done[0], total), total, {})

    if plan.base.layout == "single_file":
        single = edits[0] if edits else patched_output.FileEdits(plan.base.weights, {})
        written = patched_output.write_single_file(single, output, record, copied=copied, durable=durable)
        return written, 0
    return patched_output.write_folder(plan.base.weights, output, edits, record, link=link, copied=copied,
                                       durable=durable)  # fmt: skip


@dataclass(frozen=True)
class RevertResult:
    output: Path
    base_fingerprint: str
    patches: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "base_fingerprint": self.base_fingerprint, "removed": self.patches}


def _originals(ref: refs.ModelRef, record: dict[str, Any], revert_data: Path | None) -> revert_data_io.Originals:
    """The original bytes to write back: from the revert file, checked to belong to this output."""
    if revert_data is None:
        legacy = patched_output.legacy_originals(ref.weights, ref.layout)  # outputs of patchkit < 0.2
        if legacy is None:
            raise UsageError(
                f"{ref.reference} holds no revert data: a patched checkpoint never carries the original weights",
                hint="pass --revert-data FILE, the file `patchkit apply --revert-data FILE` wrote for it",
            )
        return legacy
    reason = not_a_file(revert_data)
    if reason is not None:
        raise InputError(f"revert file {revert_data} {reason}", hint="check the --revert-data path")
    data = revert_data_io.read(revert_data)
    recorded = record.get("revert_data_sha256")
    belongs = data.sha256 == recorded if recorded else data.binding.get("output_fingerprint") == record.get(
        "output_fingerprint")  # fmt: skip
    if not belongs:
        raise TrustError(
            f"{revert_data} was not written for {ref.reference} (its digest is not the one the output records)",
            hint="pass the revert file that `patchkit apply --revert-data` wrote for this very output",
        )
    return data.originals


def revert(patched: str, output: Path, *, revert_data: Path | None = None, config: Path | None = None,
           link: bool = True, overwrite: bool = False) -> RevertResult:  # fmt: skip
    """Write the base back from a patched checkpoint and its revert data, and prove it by its fingerprint."""
    ref = refs.resolve(patched, config=config, bundled_config=True)
    record = read_provenance(ref)
    if record is None:
        raise UsageError(f"{patched} is not a checkpoint patchkit applied patches to", hint="nothing to revert")
    check_output(ref, output, overwrite=overwrite)
    _check_read_as_written(ref, patched, record)
    originals = _originals(ref, record, revert_data)
    if ref.layout == "single_file":
        patched_output.revert_single_file(ref.weights, output, originals)
    else:
        patched_output.revert_folder(ref.weights, output, originals, link=link)
    try:
        # the restored file is read with the configs the patched one was read with (bundled ones included)
        configs = ref.config_folder if ref.layout == "single_file" else output
        restored = refs.ModelRef(str(output), "single_file" if ref.layout == "single_file" else "folder", output,
                                 configs, ref.layout)  # fmt: skip
        fingerprint = combine(weights.leaves(weights.model_spans(restored)))
    except BaseException:
        _remove(output)  # an error exit leaves no output
        raise
    if fingerprint != record["base_fingerprint"]:
        _remove(output)
        raise CorruptFileError(
            f"{patched}: the reverted weights hash to {fingerprint}, not the base {record['base_fingerprint']}",
            hint="the patched checkpoint or its revert data was changed after apply; revert from fresh copies",
        )
    return RevertResult(output, fingerprint, list(record.get("patches", [])))


def _check_read_as_written(ref: refs.ModelRef, patched: str, record: dict[str, Any]) -> None:
    """Before any byte is written: PATCHED must read as the output apply recorded. A single file is
    read through its configs, so the wrong ones (no --config where apply had one) read as another
    model, as would a file changed since; either way revert would restore a model it cannot prove."""
    recorded = record.get("output_fingerprint")
    if not isinstance(recorded, str):
        return  # outputs of patchkit 0.1 recorded none; their base fingerprint is still checked after
    actual = combine(weights.leaves(weights.model_spans(ref)))
    if actual != recorded:
        config = "pass the --config that apply was given, " if ref.layout == "single_file" else ""
        raise InputError(
            f"{patched} reads as {actual[:16]}…, not as the output apply wrote ({recorded[:16]}…)",
            hint=f"{config}or revert a fresh copy of the patched checkpoint: this one was changed after apply",
        )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
