"""Put a finished temporary in place of an output, crash-safe and one writer at a time.

A file is replaced by one `rename(2)`. A folder cannot be: `rename` refuses a non-empty
target. Linux swaps two folders in one step with `renameat2(RENAME_EXCHANGE)`, so the
output path always holds the old or the new folder, and the old one is then deleted
under the temporary's name (which `atomic_path` sweeps if this process dies first).

Where the file system has no exchange, the swap is three renames with a journal in the
names: `.NAME.new-PID` (the finished temporary), then `.NAME.old-PID` (the parked
output), then the new folder in place. A writer that dies between two of them leaves
names that say how far it got, and the next writer rolls its swap forward (the new
folder is complete: it was renamed only once finished) or back.

Writers of the same folder take an exclusive `flock` on it for the swap only, so
concurrent `--overwrite` runs serialise there and the last one wins, whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from patchkit.io.dead_writers import glob_escape, pid_alive

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# The exchange is absent (old kernel, libc without the wrapper) or refused by this file system.
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def swap_into_place(tmp: Path, path: Path, *, allow_exchange: bool = True) -> None:
    """Move the finished `tmp` to `path`, replacing what is there; `tmp` is gone afterwards.

    `allow_exchange=False` takes the journalled three-rename route even where the
    exchange exists: how the tests reach the fallback on a file system that has it.
    """
    with writer_lock(path.parent):
        recover_interrupted_swaps(path)
        if not (path.is_dir() and not path.is_symlink()):
            os.replace(tmp, path)
            return
        if allow_exchange and _exchange(tmp, path):
            # `tmp` now names the old folder: delete it. A kill here leaves a dead
            # writer's temporary, which the next writer sweeps.
            shutil.rmtree(tmp, ignore_errors=True)
            return
        _journalled_swap(tmp, path)


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (released when this process ends, however it ends)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def recover_interrupted_swaps(path: Path) -> None:
    """Finish or undo the swap of any dead writer of `path`, then remove what it left.

    Call with `writer_lock` held, so that no live writer is between two renames.
    """
    journal = _journal(path)
    if not journal:
        return
    if not path.exists():
        # Prefer a finished new folder (roll forward) over the parked old one (roll back).
        for kind in ("new", "old"):
            candidates = [p for k, p in journal if k == kind]
            if candidates:
                os.replace(candidates[0], path)
                break
    for _, leftover in _journal(path):
        shutil.rmtree(leftover, ignore_errors=True)


def _journal(path: Path) -> list[tuple[str, Path]]:
    """The `.NAME.new-PID` and `.NAME.old-PID` entries of writers that are gone."""
    found = []
    for kind in ("new", "old"):
        for entry in sorted(path.parent.glob(f".{glob_escape(path.name)}.{kind}-*")):
            pid = entry.name.rsplit("-", 1)[1]
            if pid.isdigit() and not pid_alive(int(pid)):
                found.append((kind, entry))
    return found


def _journalled_swap(tmp: Path, path: Path) -> None:
    pid = os.getpid()
    staged = path.with_name(f".{path.name}.new-{pid}")
    parked = path.with_name(f".{path.name}.old-{pid}")
    try:
        os.replace(tmp, staged)
        os.replace(path, parked)
        os.replace(staged, path)
    except BaseException:
        # Interrupted (Ctrl-C) or refused between two renames: put the old folder back.
        if not path.exists() and parked.exists():
            os.replace(parked, path)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    shutil.rmtree(parked, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step; False where this system cannot (the caller falls back)."""
    renameat2 = getattr(_libc(), "renameat2", None)  # glibc 2.28+; musl and macOS lack it
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
