"""The local trust store: public keys a user vouches for, each under a name.

Layout (one folder, documented in docs/signing.md):
    <store>/<fingerprint>.pub   the PEM public key, named by its SHA-256 key id
    <store>/names.json          {"<fingerprint>": "<name>"}, sorted, written atomically
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from patchkit.core.jsonread import parse_json
from patchkit.errors import UsageError
from patchkit.io.atomic import atomic_path, write_bytes_atomic
from patchkit.io.regular import read_capped
from patchkit.io.signatures import load_public_key

MAX_NAMES_BYTES = 1 << 20  # names of a few thousand keys
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


@dataclass(frozen=True)
class TrustedKey:
    name: str
    fingerprint: str
    path: Path


class TrustStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _names(self) -> dict[str, str]:
        index = self.folder / "names.json"
        if not os.path.lexists(index):
            return {}
        hint = "restore it, or remove it and re-add your keys"
        # a dotfile manager may link it: links are followed, but a FIFO would block and is refused
        names = parse_json(read_capped(index, MAX_NAMES_BYTES, hint=hint), str(index), hint=hint)
        return {str(k): str(v) for k, v in names.items()}

    def _write_names(self, names: dict[str, str]) -> None:
        write_bytes_atomic(self.folder / "names.json", (json.dumps(names, indent=2, sort_keys=True) + "\n").encode())

    def trusted_keys(self) -> list[TrustedKey]:
        names = self._names()
        return sorted(
            (TrustedKey(name, fp, self.folder / f"{fp}.pub") for fp, name in names.items()), key=lambda k: k.name
        )

    def by_fingerprint(self, fingerprint: str) -> TrustedKey | None:
        return next((k for k in self.trusted_keys() if k.fingerprint == fingerprint), None)

    def add(self, public_key: Path, name: str) -> TrustedKey:
        if not _NAME.match(name):
            raise UsageError(f"{name!r} is not a usable key name", hint="letters, digits, space, . _ @ -; up to 64")
        fingerprint = load_public_key(public_key)
        names = self._names()
        if fingerprint in names:
            raise UsageError(f"that key is already trusted as {names[fingerprint]!r}", hint="patchkit trust list")
        if name in names.values():
            raise UsageError(f"the name {name!r} is taken by another key", hint="choose another --name")
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"{fingerprint}.pub") as tmp:
            shutil.copyfile(public_key, tmp)
        names[fingerprint] = name
        self._write_names(names)
        return TrustedKey(name, fingerprint, self.folder / f"{fingerprint}.pub")

    def remove(self, name_or_fingerprint: str) -> TrustedKey:
        names = self._names()
        match = [fp for fp, name in names.items() if name_or_fingerprint in (name, fp)]
        if not match:
            raise UsageError(f"no trusted key is named {name_or_fingerprint!r}", hint="patchkit trust list")
        fingerprint = match[0]
        removed = TrustedKey(names.pop(fingerprint), fingerprint, self.folder / f"{fingerprint}.pub")
        self._write_names(names)
        removed.path.unlink(missing_ok=True)
        return removed
