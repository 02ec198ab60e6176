"""SHA-256 of every tensor span, hashed in parallel threads, remembered per file by its stat.

hashlib releases the GIL on large buffers, so threads hash distinct tensors on distinct
cores. A file's digests are cached under its (device, inode, size, mtime_ns, ctime_ns), as
git's index does: ctime cannot be set from user space, so an edited file always misses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from patchkit.core.fingerprint import Leaf
from patchkit.core.progress import Progress
from patchkit.io.atomic import write_bytes_atomic
from patchkit.io.tensor_spans import ModelSpans, SpanReader, TensorSpan, iter_spans

_CACHE_VERSION = 1


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _span_id(span: TensorSpan) -> str:
    return f"{span.start}+{span.nbytes}{'T' if span.transposed else ''}"


class DigestCache:
    """Per-file JSON caches in `folder`; `None` disables caching."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._loaded: dict[Path, dict[str, str]] = {}
        self._dirty: set[Path] = set()

    def _entry(self, file: Path) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / (hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:32] + ".json")

    def digests(self, file: Path) -> dict[str, str]:
        if file not in self._loaded:
            self._loaded[file] = self._read(file)
        return self._loaded[file]

    def _read(self, file: Path) -> dict[str, str]:
        entry = self._entry(file)
        if entry is None or not entry.is_file():
            return {}
        try:
            data = json.loads(entry.read_text())
        except (OSError, ValueError, RecursionError):
            return {}  # a damaged cache is only a cache: rebuild it
        if not isinstance(data, dict):
            return {}
        if data.get("version") != _CACHE_VERSION or data.get("stat") != _stat_key(file):
            return {}
        digests = data.get("digests")
        return digests if isinstance(digests, dict) else {}

    def put(self, file: Path, span: TensorSpan, digest: str) -> None:
        self.digests(file)[_span_id(span)] = digest
        self._dirty.add(file)

    def get(self, span: TensorSpan) -> str | None:
        return self.digests(span.file).get(_span_id(span))

    def save(self) -> None:
        for file in sorted(self._dirty):
            entry = self._entry(file)
            if entry is None or not file.exists():
                continue
            entry.parent.mkdir(parents=True, exist_ok=True)
            payload = {"version": _CACHE_VERSION, "file": str(file.resolve()), "stat": _stat_key(file),
                       "digests": self._loaded[file]}  # fmt: skip
            # not fsynced: an entry a power loss damages fails to parse or to match the file's
            # stat and is rebuilt, so durability would only slow every first look at a model
            with contextlib.suppress(OSError):  # a read-only cache folder costs speed, not correctness
                write_bytes_atomic(entry, json.dumps(payload, sort_keys=True).encode(), durable=False)
        self._dirty.clear()


def hash_spans(
    spans: list[TensorSpan], reader: SpanReader, cache: DigestCache, progress: Progress | None = None,
    stage: str = "fingerprint",
) -> dict[TensorSpan, str]:  # fmt: skip
    """The SHA-256 of each span's canonical bytes, from the cache where it is fresh.

    Progress counts bytes: (stage, bytes hashed or found in the cache, bytes in all).
    """
    found: dict[TensorSpan, str] = {}
    missing = []
    total, done = sum(s.nbytes for s in spans), 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        if progress:
            progress(stage, done, total, {})

    for span in spans:
        cached = cache.get(span)
        if cached is None:
            missing.append(span)
        else:
            found[span] = cached
            advance(span.nbytes)

    def work(span: TensorSpan) -> tuple[TensorSpan, str]:
        return span, reader.sha256(span)

    # biggest first, so the threads finish together
    missing.sort(key=lambda s: -s.nbytes)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for span, digest in pool.map(work, missing):
            found[span] = digest
            cache.put(span.file, span, digest)
            advance(span.nbytes)
    cache.save()
    return found


def model_leaves(
    spans: ModelSpans, reader: SpanReader, cache: DigestCache, progress: Progress | None = None,
    stage: str = "fingerprint",
) -> list[Leaf]:  # fmt: skip
    entries = list(iter_spans(spans))
    digests = hash_spans([span for _, _, span in entries], reader, cache, progress, stage)
    return [Leaf(c, k, s.dtype, s.shape, s.nbytes, digests[s]) for c, k, s in entries]
