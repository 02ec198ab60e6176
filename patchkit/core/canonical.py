"""Canonical JSON: sorted keys, no spaces, UTF-8 kept. One spelling for every byte patchkit hashes or signs."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
