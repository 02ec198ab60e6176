"""The patchkit exception hierarchy. The CLI turns each into one line, a hint and an exit code.

PatchkitError                 exit 1   anything patchkit refuses to do
├── UsageError                exit 2   arguments that cannot work together
├── InputError                exit 3   a file or folder that is missing or unreadable
│   ├── NotAPipelineError              a folder that is not a Stable Diffusion pipeline
│   ├── CorruptFileError               truncated or malformed safetensors
│   ├── PickleRefusedError             a pickle where safetensors is expected
│   └── NotCachedError                 a Hub id that is not in the local cache while offline
├── OutputError               exit 4   an output that cannot be written safely
├── ModelMismatchError        exit 5   a patch or checkpoint for another base or architecture
├── GateFailedError           exit 6   a score that misses the bench's gate
├── TrustError                exit 7   a signature, digest or trust policy that does not hold
│   └── PolicyError                    unsigned or untrusted where policy demands a trusted signature
└── ConflictError             exit 8   patches that must not be merged or stacked together
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass


class PatchkitError(Exception):
    """Base class: `message` is one line; `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PatchkitError):
    exit_code = 2


class InputError(PatchkitError):
    exit_code = 3


class NotAPipelineError(InputError):
    pass


class CorruptFileError(InputError):
    pass


class PickleRefusedError(InputError):
    pass


class NotCachedError(InputError):
    pass


class OutputError(PatchkitError):
    exit_code = 4


class ModelMismatchError(PatchkitError):
    exit_code = 5


class GateFailedError(PatchkitError):
    exit_code = 6


class TrustError(PatchkitError):
    exit_code = 7


class PolicyError(TrustError):
    pass


@dataclass(frozen=True)
class Conflict:
    """One reason patches must not (fatal) or should not be combined: what ConflictError carries."""

    kind: str  # base, forget-vs-correct, two-targets, opposing-deltas
    fatal: bool
    message: str


class ConflictError(PatchkitError):
    """Carries every conflict found, so the CLI can print the whole report, not just the first."""

    exit_code = 8

    def __init__(self, message: str, hint: str | None = None, conflicts: Sequence[Conflict] = ()) -> None:
        super().__init__(message, hint)
        self.conflicts = list(conflicts)


# errno -> (exit as an input or an output problem, what to do about it)
_OS_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("output", "free disk space, or write the output to another disk"),
    errno.EDQUOT: ("output", "your disk quota is full: free space, or write the output elsewhere"),
    errno.EFBIG: ("output", "the file would exceed the size limit (ulimit -f): raise it, or write elsewhere"),
    errno.EROFS: ("output", "that file system is read-only: write the output elsewhere"),
    errno.EACCES: ("output", "check the permissions of the path, or use another one"),
    errno.EPERM: ("output", "check the permissions of the path, or use another one"),
    errno.ENAMETOOLONG: ("output", "use a shorter name: a file name has at most 255 bytes"),
    errno.EIO: ("output", "the disk reported an I/O error: check it, then run the command again"),
    errno.ENOENT: ("input", "check the path"),
    errno.ENOTDIR: ("input", "a part of the path is a file, not a folder: check the path"),
    errno.EISDIR: ("input", "that path is a folder where a file is needed: check the path"),
}


def from_os_error(exc: OSError) -> PatchkitError:
    """An operating-system error as patchkit's one line and hint: exit 3 for an input, 4 otherwise."""
    kind, hint = _OS_ERRORS.get(exc.errno or 0, ("output", "check the path and the disk, then try again"))
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or exc.__class__.__name__
    message = f"{where}: {reason}"
    return InputError(message, hint=hint) if kind == "input" else OutputError(message, hint=hint)
