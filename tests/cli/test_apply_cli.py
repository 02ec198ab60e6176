"""`patchkit apply` as a process: exit codes, and SIGKILL at random points never leaves half a checkpoint."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from patchkit.io.patched_output import read_folder_provenance
from patchkit.io.tensors_out import save_tensors
from patchkit.models import refs, weights
from patchkit.services.fixtures import synthetic_patch

TRIALS = 20


def _patchkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchkit", *args], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})})  # fmt: skip


def test_exit_codes_and_one_line_errors(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    wrong = synthetic_patch(str(tiny_models["sd21"][0]), tmp_path / "w.safetensors", concept="circle")
    ok = _patchkit("apply", str(folder), str(patch), "-o", str(tmp_path / "out"), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["touched_tensors"] == 20
    cases = {
        ("apply", str(folder), str(wrong), "-o", str(tmp_path / "o2")): 5,  # another base
        ("apply", str(folder), str(patch), "-o", str(tmp_path / "out")): 4,  # exists
        ("apply", str(folder), str(patch), "-o", str(folder)): 4,  # the base itself
        ("apply", str(folder), str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "o3")): 3,
        ("apply", str(folder), str(patch), "-o", str(tmp_path / "o4"), "--require-signed"): 7,
    }
    for args, code in cases.items():
        result = _patchkit(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not any((tmp_path / n).exists() for n in ("o2", "o3", "o4"))


# torch's import alone costs more than fusing every attention weight of SD 1.5, so the
# apply path must never import it: a poisoned module entry makes any such import fail
_WITHOUT_TORCH = """
import runpy, sys
sys.modules["torch"] = None
sys.argv = ["patchkit", *sys.argv[1:]]
runpy.run_module("patchkit", run_name="__main__")
"""


def test_apply_and_revert_never_import_torch(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    out = tmp_path / "out.safetensors"
    run = [sys.executable, "-c", _WITHOUT_TORCH]
    kept = tmp_path / "out.revert.safetensors"
    applied = subprocess.run([*run, "apply", str(single), str(patch), "--config", str(folder), "-o", str(out),
                              "--revert-data", str(kept), "--json"], capture_output=True, text=True)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    record = json.loads(applied.stdout)
    patched = refs.resolve(str(out), config=folder)
    assert weights.describe(patched).fingerprint == record["output_fingerprint"]
    back = subprocess.run([*run, "revert", str(out), "--revert-data", str(kept), "--config", str(folder), "-o",
                           str(tmp_path / "back.safetensors")], capture_output=True, text=True)  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "back.safetensors").read_bytes() == single.read_bytes()


@pytest.fixture
def big_folder(tiny_models, tmp_path) -> Path:
    """The tiny SD 1.5 folder with a 256 MB extra weight file, so that copying it takes a while."""
    folder, _ = tiny_models["sd15"]
    big = tmp_path / "big"
    shutil.copytree(folder, big)
    save_tensors(big / "vae" / "extra.safetensors", {"padding": torch.ones(64 << 20)})
    return big


def _wait_for_partial(folder: Path, name: str, process: subprocess.Popen[bytes], limit: float = 60) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(folder.glob(f".{name}.*.partial")) or process.poll() is not None:
            return process.poll() is None
        time.sleep(0.0005)
    return False


def _complete(out: Path, base: Path) -> str:
    """The recorded output fingerprint, after checking that every file is there and the weights hash to it."""
    record = read_folder_provenance(out)
    assert record is not None
    files = {p.relative_to(base) for p in base.rglob("*") if p.is_file()}
    assert files <= {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert weights.describe(refs.resolve(str(out))).fingerprint == record["output_fingerprint"]
    return record["output_fingerprint"]


def test_sigkill_during_apply_leaves_no_output_or_a_complete_one(big_folder, tmp_path):
    patch = synthetic_patch(str(big_folder), tmp_path / "p.safetensors", concept="circle")
    out_dir = tmp_path / "outs"
    out_dir.mkdir()
    command = [sys.executable, "-m", "patchkit", "--quiet", "apply", str(big_folder), str(patch), "--copy"]

    # how long the write takes here, from the first temporary byte to the rename
    started = subprocess.Popen([*command, "-o", str(out_dir / "calibrate")])
    assert _wait_for_partial(out_dir, "calibrate", started)
    began = time.monotonic()
    assert started.wait(timeout=120) == 0
    window = time.monotonic() - began
    expected = _complete(out_dir / "calibrate", big_folder)

    rng = random.Random(0)
    outcomes = {"none": 0, "complete": 0}
    for trial in range(TRIALS):
        out = out_dir / f"o{trial}"
        process = subprocess.Popen([*command, "-o", str(out)], stderr=subprocess.DEVNULL)
        if _wait_for_partial(out_dir, out.name, process):
            time.sleep(rng.uniform(0, window * 1.1))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if out.exists():
            assert _complete(out, big_folder) == expected
            outcomes["complete"] += 1
            shutil.rmtree(out)  # twenty complete copies would hold gigabytes of CI's disk
        else:
            outcomes["none"] += 1
    assert outcomes["none"] >= 1  # the kills did land mid-write
    # a later run to the same name sweeps the dead writers' temporaries away
    rerun = subprocess.run([*command, "-o", str(out_dir / "o0"), "--overwrite"], capture_output=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out_dir.glob(".o0.*.partial"))
