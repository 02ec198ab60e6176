"""`accelerate launch` with 2 CPU processes (gloo) gives exactly the single-process scores."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.services.test_score import small_bench


def _score(bench: Path, launcher: list[str]) -> dict:
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launcher, "-m", "patchkit", "--quiet", "score", "testbed", "--bench", str(bench), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_two_processes_equal_one(tmp_path):
    bench = small_bench(tmp_path, per_concept=6)
    single = _score(bench, [sys.executable])
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is installed with patchkit"
    launcher = [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    double = _score(bench, launcher)
    hits = [(c["concept"], c["before"]["hits"], c["before"]["n"]) for c in single["concepts"]]
    assert hits == [(c["concept"], c["before"]["hits"], c["before"]["n"]) for c in double["concepts"]]
    assert [c["before"]["score"] for c in single["concepts"]] == [c["before"]["score"] for c in double["concepts"]]
