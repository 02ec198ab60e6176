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


def check_output_path(path: Path, *, force: bool = False, flag: str = "--force") -> None:
    """Refuse an output whose folder is missing, or that exists without `force` (the command's `flag`)."""
    if not path.parent.exists():
        raise OutputError(
            f"output folder {path.parent} does not exist", hint=f"create it first: mkdir -p {path.parent}"
        )
    if path.exists() and not force:
        raise OutputError(f"{path} already exists", hint=f"pass {flag} to overwrite it, or choose another path")


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
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced in one rename: park the old one first, so that a
            # crash leaves either the old or the new folder in place, never neither.
            parked = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, parked)
            os.replace(tmp, path)
            shutil.rmtree(parked, ignore_errors=True)
        else:
            os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


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


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
