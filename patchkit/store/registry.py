"""The local patch registry on disk (docs/registry.md).

    <root>/registry.json                 {"layout_version": 1}
    <root>/blobs/sha256/<hex>            patch files, named by the SHA-256 of their bytes
    <root>/blobs/sha256/<hex>.sig        the patch's signature bundle, when it has one
    <root>/refs/<name>/<version>.json    one entry: name, version, blob, patch id, manifest, signer
    <root>/index.json                    every entry's summary; rebuilt from refs by `reindex`
    <root>/tmp/                          temporaries, renamed into place (same filesystem)
    <root>/.lock                         the write lock (flock)

Every write happens under the lock, to a temporary that is fsynced and renamed: blob first,
then ref, then index, so a crash can leave an unreferenced blob (gc removes it) but never a
ref or an index entry without its blob, nor half a blob under its final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.canonical import canonical_json
from patchkit.core.names import check_name, check_version, version_key
from patchkit.errors import CorruptFileError, InputError, OutputError
from patchkit.io.atomic import dead_temporaries, fsync_dir, write_bytes_atomic
from patchkit.io.dead_writers import pid_alive
from patchkit.io.regular import read_chunks, read_own_file

LAYOUT_VERSION = 1
_CHUNK = 1 << 20
# A ref holds one manifest (a few KiB); the index, one summary per entry. Far past either is not ours.
MAX_REF_BYTES = 16 << 20
MAX_INDEX_BYTES = 512 << 20
_REPAIR = "patchkit registry verify; then reindex"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file (a link, FIFO or device in its place is refused, never read)."""
    digest = hashlib.sha256()
    for block in read_chunks(path, _CHUNK):
        digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One name@version: its blob and the summary the index keeps."""

    name: str
    version: str
    blob: str  # sha256 hex of the patch file
    record: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- layout -------------------------------------------------------------------------------

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def blob_path(self, blob: str) -> Path:
        if not _BLOB.fullmatch(blob):  # a ref edited to ../../etc/passwd must not name a path outside
            raise CorruptFileError(f"{blob[:80]!r} is not a blob name (64 hex digits)", hint="patchkit registry verify")
        return self.blobs / blob

    def ref_path(self, name: str, version: str) -> Path:
        return self.refs / check_name(name) / f"{check_version(version)}.json"

    def check_layout(self) -> None:
        """Refuse a folder that is not a registry, or one of a layout we do not understand (reads too:
        `registry verify` must not call a registry of another layout ok)."""
        self._check()

    def _check(self) -> None:
        """Refuse a folder that is not a registry, or one of a layout we do not understand."""
        marker = self.root / "registry.json"
        if os.path.lexists(marker):
            hint = 'restore it: {"layout_version": 1}'
            try:
                version = json.loads(read_own_file(marker, 4096)).get("layout_version")
            except InputError as exc:  # a FIFO, link or giant in the marker's place
                raise CorruptFileError(exc.message, hint=hint) from exc
            except (ValueError, AttributeError, RecursionError) as exc:
                raise CorruptFileError(f"{marker} is not valid JSON", hint=hint) from exc
            if version != LAYOUT_VERSION:
                raise InputError(
                    f"{self.root}: registry layout {version} is not {LAYOUT_VERSION}", hint="upgrade patchkit"
                )
            return
        # another writer may be creating the layout right now: only its own names are allowed
        foreign = [p.name for p in self.root.iterdir() if not _ours(p.name)] if self.root.exists() else []
        if foreign:
            raise InputError(
                f"{self.root} is not a patchkit registry (it holds {foreign[0]!r})",
                hint="point --registry at an empty folder or an existing registry",
            )

    def _initialise(self) -> None:
        for folder in (self.blobs, self.refs, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        marker = self.root / "registry.json"
        if not marker.is_file():
            write_bytes_atomic(marker, b'{"layout_version": 1}\n')

    def ensure(self) -> None:
        """Check `root`, and create the layout under the lock if it is not there yet."""
        with self.locked():
            pass

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The write lock; the layout is created inside it, so concurrent first writers agree."""
        self._check()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self._initialise()
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- writes (call under `locked`) ------------------------------------------------------------

    def _stage(self, source: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}.", suffix=".partial", dir=self.tmp)
        staged = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise OutputError(
                f"cannot write into the registry at {self.root} ({exc.strerror})",
                hint="check its disk space and permissions",
            ) from exc
        return staged

    def put_blob(self, source: Path, signature: Path | None) -> str:
        """Store `source` (and its signature) under its SHA-256; return the hex."""
        staged = self._stage(source)
        blob = file_sha256(staged)
        target = self.blob_path(blob)
        if signature is not None:
            sig_staged = self._stage(signature)
            os.replace(sig_staged, target.with_name(blob + ".sig"))
        if target.exists():
            staged.unlink()
        else:
            os.replace(staged, target)
        fsync_dir(self.blobs)
        return blob

    def put_entry(self, entry: Entry) -> None:
        path = self.ref_path(entry.name, entry.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, _dumps({"name": entry.name, "version": entry.version, "blob": entry.blob,
                                         **entry.record}))  # fmt: skip

    def remove_entry(self, name: str, version: str) -> None:
        path = self.ref_path(name, version)
        path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def write_index(self, entries: list[Entry]) -> None:
        index = {"layout_version": LAYOUT_VERSION,
                 "entries": {e.ref: {"name": e.name, "version": e.version, "blob": e.blob, **e.record} for e in entries}}  # fmt: skip  # noqa: E501
        write_bytes_atomic(self.index_path, _dumps(index))

    # -- reads ---------------------------------------------------------------------------------

    def read_index(self) -> dict[str, dict[str, Any]]:
        if not os.path.lexists(self.index_path):
            return {}
        damaged = CorruptFileError(f"{self.index_path} is damaged", hint="rebuild it: patchkit registry reindex")
        try:
            data = json.loads(read_own_file(self.index_path, MAX_INDEX_BYTES))
        except InputError as exc:  # a link, FIFO or giant in the index's place
            raise CorruptFileError(exc.message, hint="rebuild it: patchkit registry reindex") from exc
        except (ValueError, RecursionError) as exc:
            raise damaged from exc
        entries = data.get("entries", {}) if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise damaged  # a list, or entries of the wrong shape: the index is only a summary of refs/
        return entries

    def read_entry(self, name: str, version: str) -> Entry | None:
        path = self.ref_path(name, version)
        if not os.path.lexists(path):
            return None
        return _entry(path)  # whatever sits there (a FIFO, a link) is read or refused, never skipped

    def versions(self, name: str) -> list[str]:
        folder = self.refs / check_name(name)
        if not folder.is_dir():
            return []
        return sorted((p.stem for p in folder.glob("*.json")), key=version_key)

    def scan_refs(self) -> list[Entry]:
        """Every ref file, read from disk: the truth the index is rebuilt from."""
        if not self.refs.is_dir():
            return []
        return [_entry(p) for p in sorted(self.refs.glob("*/*.json"))]

    def count_refs(self) -> int:
        if not self.refs.is_dir():
            return 0
        return sum(1 for folder in os.scandir(self.refs) if folder.is_dir()
                   for item in os.scandir(folder.path) if item.name.endswith(".json"))  # fmt: skip

    def blob_names(self) -> list[str]:
        if not self.blobs.is_dir():
            return []
        return sorted(p.name for p in self.blobs.iterdir() if not p.name.endswith(".sig"))

    def stale_temporaries(self) -> list[Path]:
        """What killed writers left: staged blobs in tmp/, half-written refs, index and signature
        temporaries (their pid no longer runs), and signatures whose blob never landed."""
        stale = []
        if self.tmp.is_dir():
            for path in self.tmp.iterdir():
                pid = path.name.split(".", 1)[0]
                if not pid.isdigit() or not pid_alive(int(pid)):
                    stale.append(path)
        folders = [
            self.root,
            self.blobs,
            *(sorted(p for p in self.refs.iterdir() if p.is_dir()) if self.refs.is_dir() else []),
        ]
        for folder in folders:
            stale += dead_temporaries(folder)
        if self.blobs.is_dir():
            stale += [p for p in self.blobs.glob("*.sig") if not (self.blobs / p.name.removesuffix(".sig")).exists()]
        return sorted(stale)


_BLOB = re.compile(r"[0-9a-f]{64}")
_LAYOUT_NAMES = {"blobs", "refs", "tmp", ".lock", "index.json", "registry.json"}


def _ours(name: str) -> bool:
    return name in _LAYOUT_NAMES or (name.startswith(".") and name.endswith(".partial"))


def _entry(path: Path) -> Entry:
    try:
        raw = read_own_file(path, MAX_REF_BYTES)  # the registry writes refs as files, never as links
    except InputError as exc:
        raise CorruptFileError(exc.message, hint=_REPAIR) from exc
    try:
        data = json.loads(raw)
        entry = Entry(data.pop("name"), data.pop("version"), data.pop("blob"), data)
    except (ValueError, KeyError, AttributeError, TypeError, RecursionError) as exc:
        raise CorruptFileError(f"{path} is not a registry entry", hint=_REPAIR) from exc
    if not isinstance(entry.blob, str) or not _BLOB.fullmatch(entry.blob):
        raise CorruptFileError(f"{path}: its blob is not a SHA-256 name", hint=_REPAIR)
    return entry


def _dumps(value: Any) -> bytes:
    return (canonical_json(value) + "\n").encode()
