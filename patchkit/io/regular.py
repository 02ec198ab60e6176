"""Opening a file patchkit did not make: a regular file only, never a link, FIFO or device.

A registry blob replaced by a symlink to /dev/zero, or by a FIFO, would make a reader block
or read forever. Opening with O_NOFOLLOW | O_NONBLOCK and checking fstat first turns both
into a one-line error, and a reader never reads past the size fstat reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from patchkit.errors import InputError


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file ("does not exist", "is a folder, not a file", ...), or None."""
    try:
        mode = path.stat().st_mode  # follows links: a link to a file is a file
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc.__class__.__name__})"
    if stat.S_ISREG(mode):
        return None
    return f"is {_kind(mode)}, not a file" if stat.S_ISDIR(mode) else f"is {_kind(mode)}, not a regular file"


def check_patch_paths(paths: Iterable[Path]) -> None:
    """Refuse, before any model loads, a --patch that is missing or not a regular file."""
    for path in paths:
        reason = not_a_file(path)
        if reason is not None:
            raise InputError(f"patch {path} {reason}", hint="check the path")


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[tuple[int, int]]:
    """(fd, size) of `path`, which must be a regular file and not a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise InputError(
                f"{path} is a symbolic link where a file is expected", hint="replace it by the file"
            ) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path} is {_kind(info.st_mode)}, not a regular file", hint="replace it by the file")
        yield fd, info.st_size
    finally:
        os.close(fd)


def read_chunks(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A regular file's bytes, never more than its size when opened."""
    with open_regular(path) as (fd, size):
        offset = 0
        while offset < size:
            block = os.pread(fd, min(chunk, size - offset), offset)
            if not block:
                return
            offset += len(block)
            yield block


def read_own_file(path: Path, max_bytes: int) -> bytes:
    """All of `path`, a regular file that is not a link (a file patchkit wrote itself, such as a
    registry ref), refused past `max_bytes`: a FIFO, device or link in its place is an InputError."""
    with open_regular(path) as (fd, size):
        if size > max_bytes:
            raise InputError(f"{path} is {size:,} bytes; the limit for this file is {max_bytes:,}", hint="")
        return os.pread(fd, size, 0)


def read_capped(path: Path, max_bytes: int, *, hint: str) -> bytes:
    """All of a regular file `path` (a link is followed, to a regular file only), refused past `max_bytes`."""
    if not path.exists():
        raise InputError(f"{path} does not exist", hint=hint)
    with open_regular(path.resolve()) as (fd, size):
        if size > max_bytes:
            raise InputError(f"{path} is {size:,} bytes; the limit for this file is {max_bytes:,}", hint=hint)
        return os.pread(fd, size, 0)
