"""Registry use cases: add, list, show, search, rm, gc, export, verify, reindex, and NAME@VERSION lookup."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchkit.core.layouts import file_name, kohya_sibling, layout_of
from patchkit.core.names import check_name, check_version, looks_like_ref, parse_ref, version_key
from patchkit.errors import ConflictError, CorruptFileError, InputError, PatchkitError, PolicyError
from patchkit.io.atomic import copy_atomic
from patchkit.io.patch_file import read_intact_patch
from patchkit.io.signatures import read_bundle, signature_path_for
from patchkit.services.signing import trust_store, verify
from patchkit.store.locations import registry_dir, require_signed_by_default
from patchkit.store.registry import Entry, Registry, file_sha256

_HEX64 = re.compile(r"[0-9a-f]{64}")


def open_registry(root: Path | None = None) -> Registry:
    return Registry(root or registry_dir())


def _summary(manifest: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What the index keeps of an entry: enough to filter, sort and list without opening refs."""
    concepts = []
    for c in manifest["concepts"]:
        item = {"name": c["name"], "category": c["category"], "action": c["action"]}
        if "target" in c:
            item["target"] = c["target"]
        after = c.get("mscore", {}).get("prompt", {}).get("after")
        if after is not None:
            item["after"] = after
        if isinstance(c.get("attack"), dict):
            item["attack"] = _attack_summary(c["attack"])
        concepts.append(item)
    return {
        "patch_id": manifest["patch_id"],
        "concepts": concepts,
        "base_fingerprint": manifest["base"]["fingerprint"],
        "family": manifest["base"]["family"],
        "description": manifest.get("description", ""),
        "author": manifest.get("author", ""),
        "signed": record["signed"],
        "signed_by": record["signed_by"],
        "key": record.get("key"),
        "added_at": record["added_at"],
        "layouts": sorted(layouts_of_record(manifest, record)),
    }


def _attack_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the index keeps of a concept's attack record: the worst ASR, and whether it may gate a
    release: the whole current suite ran, at its standard budget (a smaller run proves less)."""
    from patchkit.evaluation.attack_report import ATTACK_DEFINITION, ATTACKS

    asr = record.get("asr", {})
    complete = set(asr) >= set(ATTACKS) and all(asr[a] is not None for a in ATTACKS)
    return {
        "worst_asr": record.get("worst_asr"),
        "worst_attack": record.get("worst_attack"),
        "certified": bool(record.get("standard_budget")) and complete and record.get("definition") == ATTACK_DEFINITION,
    }


def within_asr(rows: list[dict[str, Any]], max_asr: float) -> tuple[list[dict[str, Any]], int]:
    """The rows whose every forgotten concept was attacked with the full standard suite and whose
    worst-case ASR is at most `max_asr`, and how many rows had no such record to judge by."""
    kept, unjudged = [], 0
    for row in rows:
        worst = [worst_asr_of(c) for c in row["concepts"] if c.get("action") == "forget"]
        if not worst or any(w is None for w in worst):
            unjudged += 1
        elif all(w is not None and w <= max_asr for w in worst):
            kept.append(row)
    return kept, unjudged


def worst_asr_of(summary: dict[str, Any], *, certified_only: bool = True) -> float | None:
    """A concept summary's worst-case ASR, or None without a (certified) record. The index is a
    file a person can edit: a value of the wrong type is no record, never a crash."""
    record = summary.get("attack")
    if not isinstance(record, dict) or (certified_only and record.get("certified") is not True):
        return None
    worst = record.get("worst_asr")
    return float(worst) if isinstance(worst, int | float) and not isinstance(worst, bool) else None


def layouts_of_record(manifest: dict[str, Any], record: dict[str, Any]) -> dict[str, str]:
    """{layout: blob} of an entry; refs written before layouts were stored hold one, the manifest's."""
    return dict(record.get("layouts") or {layout_of(manifest): record["blob"]})


def layouts_of(entry: Entry) -> dict[str, str]:
    return layouts_of_record(entry.record["manifest"], {"blob": entry.blob, **entry.record})


def _signature(patch: Path, require_signed: bool) -> tuple[str | None, str | None, Path | None]:
    """(signing key id, trusted signer name, signature path). A signature present must verify if its key is trusted."""
    sig = signature_path_for(patch)
    if not sig.is_file():
        if require_signed:
            raise PolicyError(f"{patch} is not signed, and policy requires signed patches",
                              hint=f"sign it: patchkit sign {patch} --key KEY")  # fmt: skip
        return None, None, None
    key = read_bundle(sig).key_hint
    try:
        result = verify(patch, use_trust_store=True, store=trust_store())
    except PolicyError:
        if require_signed:
            raise
        return key, None, sig  # signed by a key we do not know: kept, listed by key id until it is trusted
    return key, result.signer, sig


@dataclass(frozen=True)
class AddResult:
    entry: Entry
    added: bool  # False when the same content was already there under this name@version
    notes: tuple[str, ...] = ()  # what was seen and left out (a sibling layout that did not qualify)

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.entry.ref, "blob": self.entry.blob, "added": self.added,
                "signed_by": self.entry.record["signed_by"], "layouts": sorted(layouts_of(self.entry)),
                "notes": list(self.notes)}  # fmt: skip


def add(patch: Path, *, root: Path | None = None, name: str | None = None, version: str | None = None,
        require_signed: bool | None = None) -> AddResult:  # fmt: skip
    """Validate, verify any signature, store content-addressed, and index; refuse a clash of name@version.

    Both layouts of one patch live in one entry: a PEFT file brings its `.kohya.safetensors`
    twin from beside it, and the other layout of an entry's patch (the same patch id) added
    later joins that entry instead of clashing with it."""
    registry = open_registry(root)
    parsed = read_intact_patch(patch)
    name = check_name(parsed.manifest["name"] if name is None else name)
    version = check_version(parsed.manifest["version"] if version is None else version)
    require = require_signed_by_default() if require_signed is None else require_signed
    key, signer, sig = _signature(patch, require)
    layout = layout_of(parsed.manifest)
    added_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    with registry.locked():
        existing = registry.read_entry(name, version)
        digest = file_sha256(patch)
        if existing is not None:
            stored = layouts_of(existing)
            if digest in stored.values():
                return AddResult(existing, False)
            if existing.record["patch_id"] != parsed.patch_id or layout in stored:
                raise ConflictError(
                    f"{name}@{version} is already in the registry with different content",
                    hint=f"give it another version: patchkit registry add {patch} --version NEW",
                )
            if key != existing.record.get("key"):
                raise PolicyError(
                    f"{patch} is the {layout} layout of {existing.ref}, but not signed by the key that signed it",
                    hint=f"sign it with the same key, then add it again (patchkit sign {patch} --key ...)",
                )
            entry = _with_layout(registry, existing, patch, sig, layout, digest)
            _index_with(registry, entry)
            return AddResult(entry, True)
        blob = registry.put_blob(patch, sig)
        if blob != digest:
            raise CorruptFileError(f"{patch} changed while it was being added", hint="add it again")
        record = {"patch_id": parsed.patch_id, "manifest": parsed.manifest, "signed": key is not None,
                  "signed_by": signer, "key": key, "added_at": added_at, "layouts": {layout: blob}}  # fmt: skip
        entry = Entry(name, version, blob, record)
        notes: tuple[str, ...] = ()
        twin = kohya_sibling(patch)
        if layout == "peft" and twin.is_file():
            qualified, notes = _twin(twin, parsed.patch_id, key, require)
            if qualified:
                entry = _with_layout(registry, entry, twin, signature_path_for(twin), "kohya", file_sha256(twin),
                                     put=False)  # fmt: skip
        registry.put_entry(entry)
        _index_with(registry, entry)
    return AddResult(entry, True, notes)


def _twin(twin: Path, patch_id: str, key: str | None, require: bool) -> tuple[bool, tuple[str, ...]]:
    """Whether the kohya file beside a PEFT patch is its other layout, under the same signature."""
    try:
        parsed = read_intact_patch(twin)
        twin_key, _, _ = _signature(twin, require)
    except PatchkitError as exc:
        return False, (f"{twin} was not stored: {exc.message}",)
    if parsed.patch_id != patch_id or layout_of(parsed.manifest) != "kohya":
        return False, (f"{twin} was not stored: it is not the kohya layout of this patch (another patch id)",)
    if twin_key != key:
        return False, (f"{twin} was not stored: it is not signed by the key that signed the patch",)
    return True, ()


def _with_layout(registry: Registry, entry: Entry, path: Path, sig: Path | None, layout: str, digest: str,
                 *, put: bool = True) -> Entry:  # fmt: skip
    """`entry` with the file at `path` stored as its `layout`; the ref is rewritten when `put`."""
    blob = registry.put_blob(path, sig if sig is not None and sig.is_file() else None)
    if blob != digest:
        raise CorruptFileError(f"{path} changed while it was being added", hint="add it again")
    record = dict(entry.record, layouts={**layouts_of(entry), layout: blob})
    updated = Entry(entry.name, entry.version, entry.blob, record)
    if put:
        registry.put_entry(updated)
    return updated


def _index_with(registry: Registry, entry: Entry | None, removed: str | None = None) -> None:
    """Update the index under the lock; rebuild it from refs when it has drifted (a crash between writes)."""
    index = registry.read_index()
    if removed:
        index.pop(removed, None)
    if entry is not None:
        index[entry.ref] = {"name": entry.name, "version": entry.version, "blob": entry.blob,
                            **_summary(entry.record["manifest"], entry.record)}  # fmt: skip
    if len(index) != registry.count_refs():
        _rebuild(registry)
        return
    registry.write_index([Entry(v["name"], v["version"], v["blob"], _strip(v)) for v in index.values()])


def _strip(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("name", "version", "blob")}


def _rebuild(registry: Registry) -> int:
    entries = registry.scan_refs()
    registry.write_index([Entry(e.name, e.version, e.blob, _summary(e.record["manifest"], e.record)) for e in entries])
    return len(entries)


def _has_signature(registry: Registry, summary: dict[str, Any]) -> bool:
    blob = registry.blob_path(summary["blob"])
    return blob.with_name(blob.name + ".sig").is_file()


def reindex(root: Path | None = None) -> int:
    registry = open_registry(root)
    with registry.locked():
        return _rebuild(registry)


def entries(root: Path | None = None, *, concept: str | None = None, category: str | None = None,
            base: str | None = None, signed_by: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Index summaries matching every filter given, sorted by name then version."""
    # a trust-store name stands for its key, so keys trusted after the patch was added still match
    trusted = {k.fingerprint: k.name for k in trust_store().trusted_keys()}
    keys = {fp for fp, name in trusted.items() if name == signed_by}
    found = []
    registry = open_registry(root)
    for summary in registry.read_index().values():
        concepts = summary["concepts"]
        if concept is not None and not any(c["name"] == concept for c in concepts):
            continue
        if category is not None and not any(c["category"] == category for c in concepts):
            continue
        if base is not None and summary["base_fingerprint"] != base:
            continue
        # by key, and only where a signature is there: the name a ref records is text anyone can
        # edit (verify checks each signature against its key; listing stays a cheap stat)
        if signed_by is not None and (summary.get("key") not in keys or not _has_signature(registry, summary)):
            continue
        found.append(dict(summary, trusted_as=trusted.get(summary.get("key") or "")))
    return sorted(found, key=lambda s: (s["name"], version_key(s["version"])))


def base_fingerprint_of(text: str) -> str:
    """A fingerprint given as 64 hex digits, or the fingerprint of the model that `text` names."""
    if _HEX64.fullmatch(text):
        return text
    from patchkit.models import refs, weights

    return weights.describe(refs.resolve(text, bundled_config=True)).fingerprint


def search(text: str, root: Path | None = None) -> list[dict[str, Any]]:
    needle = text.lower()

    def haystack(s: dict[str, Any]) -> str:
        words = [s["name"], s["version"], s.get("description", ""), s.get("author", "")]
        words += [f"{c['name']} {c['category']} {c.get('target', '')}" for c in s["concepts"]]
        return " ".join(words).lower()

    return [s for s in entries(root) if needle in haystack(s)]


def find(ref: str, root: Path | None = None) -> Entry:
    """NAME@VERSION, or NAME for its highest version."""
    name, version = parse_ref(ref)
    registry = open_registry(root)
    if version is None:
        versions = registry.versions(name)
        if not versions:
            raise InputError(f"{name} is not in the registry at {registry.root}", hint="patchkit registry list")
        version = versions[-1]
    entry = registry.read_entry(name, version)
    if entry is None:
        known = ", ".join(registry.versions(name)) or "none"
        raise InputError(f"{name}@{version} is not in the registry (versions: {known})", hint="patchkit registry list")
    return entry


def blob_for(ref: str, root: Path | None = None, *, layout: str | None = None) -> Path:
    """The stored patch file of `ref` (in `layout`, else the one added first), after checking that
    its bytes still hash to its address."""
    entry = find(ref, root)
    blob = entry.blob if layout is None else layouts_of(entry).get(layout)
    if blob is None:
        hint = f"write it with patchkit export --format {layout}, then patchkit registry add it"
        raise InputError(f"{entry.ref} has no {layout} layout in the registry", hint=hint)
    return _checked_blob(open_registry(root), entry, blob)


def _checked_blob(registry: Registry, entry: Entry, blob: str) -> Path:
    path = registry.blob_path(blob)
    if not path.is_file():
        raise CorruptFileError(f"{entry.ref}: its blob {blob[:16]}… is missing", hint="patchkit registry verify")
    if file_sha256(path) != blob:
        raise CorruptFileError(f"{entry.ref}: its blob {blob[:16]}… is corrupted on disk",
                               hint="remove it (patchkit registry rm) and add the patch again")  # fmt: skip
    return path


def patch_path(argument: str | Path, root: Path | None = None) -> Path:
    """A patch file as given, or the checked blob of a NAME@VERSION registry entry."""
    path = Path(argument)
    if not path.exists() and looks_like_ref(str(argument)):
        return blob_for(str(argument), root)
    return path


def remove(ref: str, root: Path | None = None) -> Entry:
    name, version = parse_ref(ref)
    if version is None:
        raise InputError(f"say which version of {name} to remove", hint=f"patchkit registry rm {name}@VERSION")
    registry = open_registry(root)
    with registry.locked():
        entry = find(ref, root)
        registry.remove_entry(name, version)
        _index_with(registry, None, removed=entry.ref)
    return entry


@dataclass(frozen=True)
class GcPlan:
    blobs: list[tuple[str, int]]  # unreferenced blob, bytes
    temporaries: list[Path]
    executed: bool = False

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.blobs)

    def to_json(self) -> dict[str, Any]:
        return {"executed": self.executed, "blobs": [b for b, _ in self.blobs], "bytes": self.bytes,
                "temporaries": [str(p) for p in self.temporaries]}  # fmt: skip


def gc(root: Path | None = None, *, dry_run: bool = False) -> GcPlan:
    """Plan the removal of unreferenced blobs and dead writers' temporaries; then do it unless dry_run."""
    registry = open_registry(root)
    with registry.locked():
        referenced = {blob for e in registry.scan_refs() for blob in (e.blob, *layouts_of(e).values())}
        blobs = [(b, registry.blob_path(b).stat().st_size) for b in registry.blob_names() if b not in referenced]
        plan = GcPlan(blobs, registry.stale_temporaries())
        if dry_run:
            return plan
        for blob, _ in plan.blobs:
            registry.blob_path(blob).unlink()
            registry.blob_path(blob).with_name(blob + ".sig").unlink(missing_ok=True)
        for path in plan.temporaries:
            path.unlink(missing_ok=True)
    return GcPlan(plan.blobs, plan.temporaries, executed=True)


def export(ref: str, out: Path, root: Path | None = None) -> list[Path]:
    """Copy every layout of an entry (and its .sig) into `out`: NAME-VERSION.safetensors for PEFT,
    NAME-VERSION.kohya.safetensors for kohya. Every blob is checked before the first copy."""
    if not out.is_dir():
        raise InputError(f"{out}: no such folder", hint=f"mkdir -p {out}")
    entry = find(ref, root)
    registry = open_registry(root)
    sources = {layout: _checked_blob(registry, entry, blob) for layout, blob in sorted(layouts_of(entry).items())}
    targets = []
    for layout, source in sources.items():
        target = out / file_name(f"{entry.name}-{entry.version}", layout)
        copy_atomic(source, target)
        sig = source.with_name(source.name + ".sig")
        if sig.is_file():
            copy_atomic(sig, signature_path_for(target))
        targets.append(target)
    return targets


@dataclass(frozen=True)
class RegistryReport:
    root: Path
    blobs_checked: int
    entries: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "blobs": self.blobs_checked, "entries": self.entries, "problems": self.problems,
                "notes": self.notes}  # fmt: skip


def _signature_problems(registry: Registry, entry: Entry) -> list[str]:
    """What the ref claims of its signature, against the signature itself and today's trust store:
    a hand-edited `signed_by` or `key` must not pass for a signed patch."""
    blob = registry.blob_path(entry.blob)
    claims = (entry.record.get("signed"), entry.record.get("key"), entry.record.get("signed_by"))
    try:
        key, signer, _ = _signature(blob, False)
    except PatchkitError as exc:  # a signature that does not verify against its trusted key
        return [f"{entry.ref}: its signature does not verify ({exc.message})"]
    if key is None:
        return [f"{entry.ref}: claims a signature, but its blob has none"] if any(claims) else []
    if claims[1] != key:
        return [f"{entry.ref}: records key {str(claims[1])[:16]}…, but its signature is by {key[:16]}…"]
    if claims[2] is not None and claims[2] != signer:
        return [f"{entry.ref}: claims it is signed by {claims[2]!r}, which the trust store does not say of its key"]
    return []


def _layout_problems(registry: Registry, entry: Entry, layout: str, blob: str) -> list[str]:
    """The other layout of an entry: there, and signed by the entry's key or by none, as it was added."""
    path = registry.blob_path(blob)
    if not path.is_file():
        return [f"{entry.ref}: its {layout} blob {blob[:16]}… is missing"]
    try:
        key, _, _ = _signature(path, False)
    except PatchkitError as exc:
        return [f"{entry.ref}: the signature of its {layout} layout does not verify ({exc.message})"]
    if key != entry.record.get("key"):
        return [f"{entry.ref}: its {layout} layout is not signed by the entry's key"]
    return []


def verify_registry(root: Path | None = None) -> RegistryReport:
    """Re-hash every blob, read every ref, and check that the index names nothing missing."""
    registry = open_registry(root)
    registry.check_layout()
    problems, notes = [], []
    blobs = registry.blob_names()
    for blob in blobs:
        try:
            if file_sha256(registry.blob_path(blob)) != blob:
                problems.append(f"blob {blob[:16]}… is corrupted (its bytes no longer hash to its name)")
        except InputError as exc:  # a link, FIFO or device put in a blob's place: a finding, never a hang
            problems.append(f"blob {blob[:16]}…: {exc.message}")
    refs, referenced = [], set()
    for path in sorted(registry.refs.glob("*/*.json")) if registry.refs.is_dir() else []:
        try:
            entry = registry.read_entry(path.parent.name, path.stem)
        except Exception as exc:  # every unreadable ref (bad name, bad JSON, a FIFO) is one finding, not a crash
            where, message = str(path.relative_to(registry.root)), str(getattr(exc, "message", exc))
            problems.append(message.replace(str(path), where) if str(path) in message else f"{where}: {message}")
            continue
        if entry is None:
            continue
        refs.append(entry.ref)
        referenced.add(entry.blob)
        if not registry.blob_path(entry.blob).is_file():
            problems.append(f"{entry.ref}: its blob {entry.blob[:16]}… is missing")
            continue
        problems += _signature_problems(registry, entry)
        for layout, blob in sorted(layouts_of(entry).items()):
            referenced.add(blob)
            if blob != entry.blob:
                problems += _layout_problems(registry, entry, layout, blob)
    index = registry.read_index()
    for ref, summary in index.items():
        if not registry.blob_path(summary["blob"]).is_file():
            problems.append(f"index entry {ref} has no blob")
        if ref not in refs:
            problems.append(f"index entry {ref} has no ref file")
    missing = sorted(set(refs) - set(index))
    if missing:
        notes.append(f"{len(missing)} entries are not in the index yet (run patchkit registry reindex)")
    unreferenced = len(set(blobs) - referenced)
    if unreferenced:
        notes.append(f"{unreferenced} unreferenced blobs (patchkit registry gc removes them)")
    leftovers = registry.stale_temporaries()
    if leftovers:
        notes.append(f"{len(leftovers)} leftovers of killed writers (patchkit registry gc removes them)")
    return RegistryReport(registry.root, len(blobs), len(refs), problems, notes)
