"""The registry under concurrency and SIGKILL: real processes, nothing lost, nothing half-written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from patchkit.io.patch_file import read_patch
from patchkit.services import registry
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.patches import write_patch

WRITERS, PER_WRITER, KILLS = 8, 25, 20
ADD_ALL = """
import sys
from pathlib import Path
from patchkit.services.registry import add
for path in sys.argv[1:]:
    add(Path(path))
"""


def _variants(base: Path, folder: Path, count: int, prefix: str) -> list[Path]:
    """`count` distinct patch files: the same tensors under distinct names, so distinct bytes and blobs."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(base))
    manifest = read_patch(base).manifest
    made = []
    for i in range(count):
        out = folder / f"{prefix}-{i:03d}.safetensors"
        write_patch(out, tensors, dict(manifest, name=f"{prefix}-{i:03d}"), family="sd1", rank=4, resolution=64,
                    base_name="x")  # fmt: skip
        made.append(out)
    return made


@pytest.fixture
def one_patch(tiny_models, tmp_path) -> Path:
    return synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")


def test_eight_writers_at_once_lose_nothing(one_patch, tmp_path):
    batches = [_variants(one_patch, tmp_path / f"w{w}", PER_WRITER, f"w{w}") for w in range(WRITERS)]
    processes = [
        subprocess.Popen([sys.executable, "-c", ADD_ALL, *map(str, batch)], stderr=subprocess.PIPE) for batch in batches
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    listed = registry.entries()
    assert len(listed) == WRITERS * PER_WRITER == 200
    assert len({s["blob"] for s in listed}) == 200
    report = registry.verify_registry()
    assert report.ok and report.entries == 200 and report.blobs_checked == 200 and not report.notes


def test_sigkill_during_add_never_leaves_a_half_blob_or_a_dangling_entry(one_patch, tmp_path):
    patches = _variants(one_patch, tmp_path / "many", 20 * KILLS, "k")
    root = tmp_path / "registry"
    rng = random.Random(1)
    # calibrate: how long 20 adds take on this machine, so every kill falls inside a child's work
    started = time.perf_counter()
    for path in _variants(one_patch, tmp_path / "calibration", 20, "c"):
        registry.add(path, root=tmp_path / "calibration-registry")
    window = time.perf_counter() - started
    landed = 0
    for trial in range(KILLS):
        batch = patches[trial * 20 : (trial + 1) * 20]
        pid = os.fork()
        if pid == 0:  # the child: a real process adding patches until it is killed
            try:
                for path in batch:
                    registry.add(path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.8 * window))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        landed += os.WIFSIGNALED(status)
        report = registry.verify_registry()
        assert report.ok, (trial, report.problems)
        for summary in registry.entries():  # every listed entry's blob is complete
            assert (root / "blobs" / "sha256" / summary["blob"]).stat().st_size > 0
        blobs = root / "blobs" / "sha256"  # absent when the kill came before the first write
        assert not [p for p in (blobs.iterdir() if blobs.is_dir() else []) if p.name.endswith(".partial")]
    assert landed >= KILLS // 2  # most kills landed while the child was still adding
    # what the dead writers left in tmp/ is swept by gc; the index still lists only complete entries
    registry.gc()
    assert not (root / "tmp").is_dir() or not list((root / "tmp").iterdir())
    assert registry.verify_registry().ok
