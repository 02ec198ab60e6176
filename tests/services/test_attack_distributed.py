"""`accelerate launch` with 2 CPU processes (gloo) shares attack/1's jobs out and gives exactly one process's report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _attack(launcher: list[str], out: Path) -> dict:
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "patchkit", "--quiet", "attack", "testbed", "-c", "circle", "-c", "ring"]
    # revival jobs are shared out by the same job list; the single-process revival test covers them
    command += ["-a", "composition", "-a", "misspelling", "--images-per-prompt", "1"]
    command += ["-o", str(out), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict = json.loads(result.stdout)  # one process speaks: stdout holds one document
    assert json.loads((out / "report.json").read_text())["concepts"] == report["concepts"]
    return report


def _without_timings(report: dict) -> list[dict]:
    concepts = []
    for concept in report["concepts"]:
        attacks = [{k: v for k, v in a.items() if k != "seconds"} for a in concept["attacks"]]
        concepts.append({**concept, "attacks": attacks})
    return concepts


def test_two_processes_equal_one(tmp_path):
    single = _attack([sys.executable], tmp_path / "one")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is installed with patchkit"
    launcher = [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    double = _attack(launcher, tmp_path / "two")
    assert [c["concept"] for c in single["concepts"]] == ["circle", "ring"]
    assert [[a["attack"] for a in c["attacks"]] for c in single["concepts"]] == [["composition", "misspelling"]] * 2
    assert _without_timings(single) == _without_timings(double)
    assert (tmp_path / "two" / "circle.png").is_file() and (tmp_path / "two" / "ring.png").is_file()
