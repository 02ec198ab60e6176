"""`stack`: an ordered, base-pinned list of patches with the output fingerprint apply must reproduce."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit import TOOL
from patchkit.core import merge as merge_maths
from patchkit.core.names import looks_like_ref
from patchkit.core.progress import Progress
from patchkit.core.scales import checked_scale
from patchkit.core.stack import SCHEMA_VERSION, StackError, is_stack_name, stack_text
from patchkit.errors import ConflictError, InputError, ModelMismatchError, PatchkitError, TrustError, UsageError
from patchkit.io.atomic import check_output_path, write_bytes_atomic
from patchkit.io.patch_file import read_intact_patch, read_patch
from patchkit.io.signatures import signature_path_for
from patchkit.models import refs, weights
from patchkit.services.apply import ApplyPlan, interference, plan_apply, resolve_base
from patchkit.services.registry import patch_path
from patchkit.services.signing import trust_store, verify
from patchkit.services.sources import Stack, read_stack


def _save(stack: Stack) -> None:
    write_bytes_atomic(stack.path, stack_text(stack.data).encode())


def new_stack(base: str, output: Path, *, config: Path | None = None, force: bool = False,
              description: str | None = None) -> Stack:  # fmt: skip
    if not is_stack_name(output.name):
        raise UsageError(f"{output}: a stack file's name ends in .stack.json", hint="for example -o release.stack.json")
    check_output_path(output, force=force)
    ref = resolve_base(base, config, False)
    info = weights.describe(ref)
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "patchkit-stack",
        "base": {"reference": base, "fingerprint": info.fingerprint, "family": info.family},
        "patches": [],
        "expected_output_fingerprint": None,
        "tool": TOOL,
    }
    if description:
        data["description"] = description
    stack = Stack(output, data)
    _save(stack)
    return stack


def _base_ref(stack: Stack, base: str | None, config: Path | None) -> refs.ModelRef:
    reference = base or stack.data["base"]["reference"]
    try:
        return resolve_base(reference, config, False)
    except InputError as exc:
        raise InputError(
            f"{stack.path}: its base {reference!r} cannot be read ({exc.message})",
            hint="say where the base is now: --base PATH",
        ) from exc


def _relative_source(stack: Stack, patch: Path) -> str:
    try:
        return os.path.relpath(patch.resolve(), stack.folder.resolve())
    except ValueError:  # another drive on Windows
        return str(patch.resolve())


def add_patch(stack_path: Path, patch: Path | str, *, scale: float = 1.0, base: str | None = None,
              config: Path | None = None, progress: Progress | None = None,
              warn: Callable[[str], None] | None = None) -> Stack:  # fmt: skip
    """Append `patch`, refusing a different base, a duplicate or a concept conflict; re-plan the output.

    `warn` hears when the stacked patches move each other's edits (services.apply.interference).
    """
    scale = checked_scale(scale, "--scale")
    stack = read_stack(stack_path)
    reference = str(patch) if looks_like_ref(str(patch)) and not Path(patch).exists() else None
    patch = patch_path(patch)
    parsed = read_intact_patch(patch)
    manifest = parsed.manifest
    pinned = stack.data["base"]["fingerprint"]
    if manifest["base"]["fingerprint"] != pinned:
        raise ModelMismatchError(
            f"{patch} was made for base {manifest['base']['fingerprint']} but the stack is pinned to {pinned}",
            hint="a stack holds patches for one base; start another stack for the other base",
        )
    if any(p["patch_id"] == parsed.patch_id for p in stack.data["patches"]):
        raise UsageError(f"{patch} is already in {stack_path}", hint="patchkit stack show shows what it holds")
    manifests = [read_patch(s.path).manifest for s in stack.sources()] + [manifest]
    conflicts = [c for c in merge_maths.concept_conflicts(manifests) if c.fatal]
    if conflicts:
        raise ConflictError(
            conflicts[0].message, hint="a stack must not forget and correct one concept", conflicts=conflicts
        )
    entry = {"patch_id": parsed.patch_id, "name": manifest["name"], "version": manifest["version"],
             "source": reference or _relative_source(stack, patch), "scale": scale}  # fmt: skip
    data = {**stack.data, "patches": [*stack.data["patches"], entry], "tool": TOOL}
    updated = Stack(stack.path, data)
    plan = plan_apply(_base_ref(stack, base, config), updated.sources(), progress=progress)
    updated.data["expected_output_fingerprint"] = plan.output_fingerprint
    _save(updated)
    if warn is not None:
        for message in interference(plan):
            warn(message)
    return updated


@dataclass(frozen=True)
class Check:
    subject: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class StackVerifyResult:
    stack: Path
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. stacked patches that move each other's edits

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        checks = [{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in self.checks]
        return {"ok": self.ok, "checks": checks, "warnings": self.warnings}


def _attempt(checks: list[Check], subject: str, action: Any) -> Any:
    try:
        detail = action()
    except PatchkitError as exc:
        checks.append(Check(subject, False, exc.message))
        return None
    checks.append(Check(subject, True, detail))
    return detail


def verify_stack(stack_path: Path, base: str, *, config: Path | None = None, require_signed: bool = False,
                 progress: Progress | None = None) -> StackVerifyResult:  # fmt: skip
    """Every check, each reported: base, each patch's id and signature, the stack's signature, the output."""
    stack = read_stack(stack_path)
    checks: list[Check] = []
    store = trust_store()
    ref = _attempt(checks, "base", lambda: resolve_base(base, config, False))
    if ref is not None:
        pinned = stack.data["base"]["fingerprint"]
        actual = weights.describe(ref).fingerprint
        checks[-1] = Check("base", actual == pinned, f"fingerprint {actual}" if actual == pinned
                           else f"fingerprint {actual}, but the stack is pinned to {pinned}")  # fmt: skip
    for entry, source in zip(stack.data["patches"], stack.sources(), strict=True):
        label = f"{entry['name']}@{entry['version']}"

        def check_patch(entry: dict[str, Any] = entry, path: Path = source.path) -> str:
            parsed = read_patch(path)
            if parsed.patch_id != entry["patch_id"] or not parsed.id_matches:
                raise TrustError(f"{path}: patch id {parsed.patch_id} is not the {entry['patch_id']} pinned")
            return f"id {parsed.patch_id[:19]}…"

        _attempt(checks, label, check_patch)
        if signature_path_for(source.path).is_file() or require_signed:
            _attempt(checks, f"{label} signature", lambda path=source.path: _signed_by(path, store))
    if signature_path_for(stack.path).is_file() or require_signed:
        _attempt(checks, "stack signature", lambda: _signed_by(stack.path, store))
    warnings: list[str] = []
    if ref is not None and all(c.ok for c in checks):
        expected = stack.data["expected_output_fingerprint"]
        plans: list[ApplyPlan] = []

        def check_output() -> str:
            plans.append(plan_apply(ref, stack.sources(), progress=progress))
            planned = plans[0].output_fingerprint
            if expected and planned != expected:
                raise ModelMismatchError(f"apply would give {planned}, not the {expected} recorded")
            return f"apply gives {planned}" if expected else f"apply gives {planned} (the stack records none)"

        _attempt(checks, "output", check_output)
        if plans:  # a release stack whose forgets undo each other is the thing this check is for
            warnings = interference(plans[0])
    return StackVerifyResult(stack.path, checks, warnings)


def _signed_by(path: Path, store: Any) -> str:
    if not signature_path_for(path).is_file():
        raise TrustError(f"{path} is not signed", hint=f"patchkit sign {path} --key KEY")
    result = verify(path, use_trust_store=True, store=store)
    return f"signed by {result.signer or result.key_fingerprint[:16]}"


__all__ = ["Stack", "StackError", "StackVerifyResult", "add_patch", "new_stack", "read_stack", "verify_stack"]
