"""Where the shipped testbed lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

from patchkit.models.refs import TESTBED_MODEL, TESTBED_NAMES

TESTBED_ROOT = Path(__file__).resolve().parent / "assets"
TESTBED_JUDGES = TESTBED_ROOT / "judges"
TESTBED_BENCH = TESTBED_ROOT / "conceptbench.json"
# World B, the validation world: a model patchkit treats as any user's (no registered world).
VALIDATION_ROOT = Path(__file__).resolve().parent / "validation"
VALIDATION_MODEL = VALIDATION_ROOT / "model"
VALIDATION_JUDGES = VALIDATION_ROOT / "judges"
VALIDATION_BENCH = VALIDATION_ROOT / "conceptbench.json"
__all__ = [
    "TESTBED_BENCH",
    "TESTBED_JUDGES",
    "TESTBED_MODEL",
    "TESTBED_NAMES",
    "TESTBED_ROOT",
    "VALIDATION_BENCH",
    "VALIDATION_JUDGES",
    "VALIDATION_MODEL",
    "VALIDATION_ROOT",
]
