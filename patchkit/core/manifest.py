"""The patch manifest: validated on every read, migrated forward from older schema versions.

The manifest is canonical JSON under one safetensors header key (MANIFEST_KEY). Reading
goes: parse JSON -> refuse a newer schema_version -> apply each migration in turn ->
validate against schemas/manifest.schema.json. Migrations are explicit functions from
version N to N+1, so an old patch never silently means something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired, Required, TypedDict

from patchkit import TOOL
from patchkit.core import schemas
from patchkit.core.jsonread import parse_json
from patchkit.errors import InputError

MANIFEST_KEY = "patchkit.manifest"
SCHEMA_VERSION = 1


class ManifestError(InputError):
    """A manifest that is missing, not JSON, from a newer patchkit, or fails the schema."""


def _v0_to_v1(old: dict[str, Any]) -> dict[str, Any]:
    """v0 (the experimental `forget` of 0.1): no patch id, name or version; method settings flat."""
    new = {k: v for k, v in old.items() if k not in ("action",)}
    new["schema_version"] = 1
    new.setdefault("name", "-".join(["forget", *(c["name"].replace(" ", "-") for c in old.get("concepts", []))]))
    new.setdefault("version", "0.0.0")
    new["concepts"] = [{**c, "token": c.get("token", c.get("name", ""))} for c in old.get("concepts", [])]
    method = dict(old.get("method", {}))
    training = {k: method.pop(k) for k in list(method) if k not in ("name", "seed", "training_seconds")}
    new["method"] = {**method, "settings": training}
    return new


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1}


def migrate(data: dict[str, Any], source: str) -> dict[str, Any]:
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(
            f"{source}: manifest has no integer schema_version", hint="the patch was not made by patchkit"
        )
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{source}: manifest schema_version {version} is newer than this patchkit understands ({SCHEMA_VERSION})",
            hint="upgrade patchkit: pip install -U patchkit",
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ManifestError(
                f"{source}: no migration from manifest schema_version {version}", hint="re-create the patch"
            )
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return data


def parse_manifest(text: str | None, source: str, *, patch_id: str | None = None) -> dict[str, Any]:
    """The validated, current-version manifest from its header string.

    `patch_id` (the id recomputed from the tensors) fills the id of migrated v0 manifests,
    which had none; for current manifests it must match, which `verify` checks separately.
    """
    if text is None:
        raise ManifestError(
            f"{source} has no patchkit manifest (header key {MANIFEST_KEY!r})",
            hint="patchkit works on patches that say what they remove; wrap a LoRA from elsewhere with "
            "patchkit import LORA --base MODEL -c CONCEPT --category K -o PATCH",
        )
    data = parse_json(text, f"{source}: manifest", hint="the file was altered", error=ManifestError)
    old = data.get("schema_version")
    data = migrate(data, source)
    if old != SCHEMA_VERSION and patch_id is not None:
        data.setdefault("patch_id", patch_id)
    schemas.validate(data, "manifest", f"{source}: manifest", ManifestError)
    return data


class BaseRecord(TypedDict):
    """The base a patch was made for (schemas/manifest.schema.json#/properties/base)."""

    family: str
    reference: str
    revision: str | None
    fingerprint: str
    dtype: str
    prediction_type: NotRequired[str]  # "epsilon" or "v_prediction"; absent in patches made before 0.2


class ConceptRecord(TypedDict, total=False):
    name: Required[str]
    category: Required[str]
    action: Required[str]  # forget or correct
    token: str
    target: str
    context: str
    mscore: dict[str, Any]


class MethodRecord(TypedDict, total=False):
    name: Required[str]  # fmn, merge, import
    seed: int
    training_seconds: float | None
    images_sha256: str
    settings: dict[str, Any]


class FormatRecord(TypedDict):
    keys: str  # peft or kohya
    rank: int
    modules: list[str]


def new_manifest(
    *, patch_id: str, name: str, version: str, base: BaseRecord, concepts: list[ConceptRecord],
    method: MethodRecord, layout: FormatRecord, created_at: str, **optional: Any,
) -> dict[str, Any]:  # fmt: skip
    """The one builder of a new patch's manifest: every writer names the same parts, and the
    schema version and tool are set here. `optional` holds the schema's optional fields
    (author, license, parents, scores_inherited, collateral, ...); the schema stays the
    contract (write_patch validates against it)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "patch_id": patch_id,
        "name": name,
        "version": version,
        "base": dict(base),
        "concepts": [dict(c) for c in concepts],
        "method": dict(method),
        "format": dict(layout),
        "created_at": created_at,
        "tool": TOOL,
        **{k: v for k, v in optional.items() if v is not None},
    }
