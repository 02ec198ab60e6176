"""Where the shipped testbed lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

TESTBED_ROOT = Path(__file__).resolve().parent / "assets"
TESTBED_MODEL = TESTBED_ROOT / "model"
TESTBED_JUDGES = TESTBED_ROOT / "judges"
TESTBED_NAMES = ("testbed", "patchkit/testbed")
TESTBED_BENCH = TESTBED_ROOT / "conceptbench.json"
