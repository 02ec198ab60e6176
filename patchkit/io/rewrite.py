"""Write a safetensors file as a copy of another with some byte ranges replaced, streamed.

Untouched bytes move kernel-side (`os.copy_file_range`, which reflinks on filesystems that
can), so peak memory is the replaced tensors only. Callers wrap this in atomic_path.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from patchkit.core.canonical import canonical_json
from patchkit.errors import OutputError
from patchkit.io.safetensors_io import Header

_CHUNK = 64 << 20
Copied = Callable[[int], None]


def raw_header(path: Path) -> bytes:
    """The file's header exactly as stored: the 8-byte length and the JSON with its padding."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return struct.pack("<Q", length) + handle.read(length)


def data_length(header: Header) -> int:
    return max((info.end for info in header.tensors.values()), default=0)


def edited_header(header: Header, appended: Mapping[str, int], metadata: Mapping[str, str]) -> bytes:
    """The header of `header`'s tensors (offsets unchanged), plus U8 tensors appended after them."""
    entries: dict[str, object] = {k: v.to_json() for k, v in header.tensors.items()}
    offset = data_length(header)
    for name in sorted(appended):
        size = appended[name]
        entries[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        entries["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    raw = canonical_json(entries).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _space_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"no space left on the device while writing {path.parent}", hint="free some space, or write elsewhere with -o"
    )


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OutputError(
            f"{folder} has {free / 1e6:.1f} MB free but the output needs {needed / 1e6:.1f} MB",
            hint="free some space, or write elsewhere with -o",
        )


def _write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


@functools.cache  # looked up on the first durable write, not when the module is imported
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


_SYNC_FILE_RANGE_WRITE = 2


class Writeback:
    """Starts writing each copied range to disk from a helper thread while the copy goes on.

    The fsync before the rename then waits for the tail only, instead of the whole file
    at the end, so the disk works while the next range is copied. sync_file_range blocks
    once the device queue is full, hence the thread (ctypes releases the GIL). A hint
    only: where it is missing (not Linux) or fails, the fsync does all the work, as before.
    """

    def __init__(self, fd: int, *, enabled: bool = True) -> None:
        self._fd = fd
        self._sync = _sync_file_range() if enabled else None
        self._pool = ThreadPoolExecutor(max_workers=1) if self._sync is not None else None

    def start(self, offset: int, count: int) -> None:
        if self._pool is not None and self._sync is not None:
            self._pool.submit(self._sync, self._fd, offset, count, _SYNC_FILE_RANGE_WRITE)

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # before the caller closes the descriptor


def _copy_range(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> None:
    while count > 0:
        try:
            moved = os.copy_file_range(src, dst, count, src_offset, dst_offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            moved = 0
        if moved == 0:  # not supported here: copy through user space
            block = os.pread(src, min(count, _CHUNK), src_offset)
            if not block:
                raise OSError(errno.EIO, "source ended early")
            _write_at(dst, block, dst_offset)
            moved = len(block)
        count, src_offset, dst_offset = count - moved, src_offset + moved, dst_offset + moved


def write_file(
    destination: Path,
    head: bytes,
    source: Path,
    source_data_start: int,
    copy_length: int,
    replacements: Mapping[int, bytes],
    appended: Sequence[bytes] = (),
    copied: Copied | None = None,
    durable: bool = True,
) -> int:
    """`head`, then `copy_length` data bytes of `source` with `replacements` (data offset -> bytes), then `appended`."""
    try:
        with open(source, "rb") as src, open(destination, "wb") as dst:
            _write_at(dst.fileno(), head, 0)
            base = len(head)
            with Writeback(dst.fileno(), enabled=durable) as writeback:
                for start in range(0, copy_length, _CHUNK):
                    count = min(_CHUNK, copy_length - start)
                    _copy_range(src.fileno(), dst.fileno(), count, source_data_start + start, base + start)
                    writeback.start(base + start, count)
                    if copied:
                        copied(count)
            for offset, data in sorted(replacements.items()):
                _write_at(dst.fileno(), data, base + offset)
            position = base + copy_length
            for data in appended:
                _write_at(dst.fileno(), data, position)
                position += len(data)
            dst.flush()
            return position
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _space_error(destination, exc) from exc
        raise


def link_or_copy(source: Path, destination: Path, *, link: bool) -> bool:
    """Hard-link where asked and possible (same filesystem), else copy; True when linked."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return True
        except OSError:
            pass
    try:
        shutil.copy2(source, destination)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _space_error(destination, exc) from exc
        raise
    return False
