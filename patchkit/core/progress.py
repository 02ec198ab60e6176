"""The progress callback every long service accepts: (stage, done, total, metrics)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int, dict[str, float]], None]
