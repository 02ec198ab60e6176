"""Atomic writes: a temporary sibling, fsync, then os.replace, so readers never see half a file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from patchkit.errors import OutputError
from patchkit.io.dead_writers import glob_escape, pid_alive
from patchkit.io.folder_swap import swap_into_place


def check_output_path(path: Path, *, force: bool = False) -> None:
    """Refuse an output whose folder is missing, or that exists without `force` (every command's --overwrite)."""
    if not path.parent.exists():
        raise OutputError(
            f"output folder {path.parent} does not exist", hint=f"create it first: mkdir -p {path.parent}"
        )
    if path.exists() and not force:
        raise OutputError(f"{path} already exists", hint="pass --overwrite to replace it, or choose another path")


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    Works for files and folders. On any exception, including KeyboardInterrupt, the
    temporary is removed and `path` is left as it was. `durable` fsyncs the data before
    the rename, so that even a power loss leaves the old or the new content; without it
    the rename is still atomic for crashes of this process, not for the machine.
    """
    _sweep_stale(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        swap_into_place(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a write() that failed (disk full, file too large) names no file: say which output it was
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    if durable:
        _sync_folder_of(path)


def _sync_folder_of(path: Path) -> None:
    """Make the rename durable. The output is already in place: a failure must say so."""
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(
            f"{path} was written, but its folder could not be synced to disk: {exc.strerror or exc}",
            hint="the output is complete now but may not survive a power loss: check the disk, then run again",
        ) from exc


def _sweep_stale(path: Path) -> None:
    """Remove temporaries that a killed writer of `path` left behind (its pid is gone)."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.partial"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.[^.]+\.partial")


def dead_temporaries(folder: Path) -> list[Path]:
    """Every temporary `atomic_path` left in `folder` whose writer is gone, whatever it was writing."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _TEMPORARY.fullmatch(path.name)
        if match and not pid_alive(int(match["pid"])):
            found.append(path)
    return sorted(found)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def _fsync(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a temporary sibling: `target` is the old file or the whole new one."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
