"""Where patchkit keeps local state, following the XDG base-directory convention."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(variable: str, default: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / default


def trust_store_dir() -> Path:
    """PATCHKIT_TRUST_STORE, else $XDG_CONFIG_HOME/patchkit/trust (~/.config/patchkit/trust)."""
    explicit = os.environ.get("PATCHKIT_TRUST_STORE")
    return Path(explicit) if explicit else _xdg("XDG_CONFIG_HOME", ".config") / "patchkit" / "trust"


def registry_dir() -> Path:
    """PATCHKIT_REGISTRY, else $XDG_DATA_HOME/patchkit/registry (~/.local/share/patchkit/registry)."""
    explicit = os.environ.get("PATCHKIT_REGISTRY")
    return Path(explicit) if explicit else _xdg("XDG_DATA_HOME", ".local/share") / "patchkit" / "registry"


def require_signed_by_default() -> bool:
    """The policy setting: PATCHKIT_REQUIRE_SIGNED=1 makes every apply and registry add demand a trusted signature."""
    return os.environ.get("PATCHKIT_REQUIRE_SIGNED", "").lower() in ("1", "true", "yes")


def digest_cache_dir() -> Path | None:
    """Where tensor digests are remembered: PATCHKIT_CACHE_DIR, else $XDG_CACHE_HOME/patchkit/digests.

    PATCHKIT_NO_CACHE=1 turns the cache off (every fingerprint re-hashes every tensor).
    """
    if os.environ.get("PATCHKIT_NO_CACHE", "").lower() in ("1", "true", "yes"):
        return None
    explicit = os.environ.get("PATCHKIT_CACHE_DIR")
    return Path(explicit) if explicit else _xdg("XDG_CACHE_HOME", ".cache") / "patchkit" / "digests"
