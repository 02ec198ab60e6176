import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from patchkit.testbed.conceptbench_build import build_testbed_bench

ENV = {"NO_COLOR": "1", "COLUMNS": "160", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}


def _bench(tmp_path: Path, names: set[str], per_concept: int) -> Path:
    """The testbed bench cut down: the tour's before/after scoring is most of its time."""
    data = build_testbed_bench()
    data["concepts"] = [
        {**c, "images_per_prompt": max(1, per_concept // len(c["prompts"]))}
        for c in data["concepts"]
        if c["name"] in names
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "patchkit", "demo", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=ENV)


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    bench = _bench(tmp_path, {"circle", "ring", "alice", "neon"}, per_concept=8)
    result = _demo("-o", str(out), "-n", "4", "--bench", str(bench))
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout and "gore" in result.stdout
    assert "circle (forgotten)" in result.stdout and "before" in result.stdout
    assert (out / "no-circle.safetensors").is_file()
    assert (out / "safe-testbed" / "patchkit.json").is_file() and "applied:" in result.stdout
    assert "testbed-no-circle@1.0.0" in result.stdout  # the example registry is listed
    grid = Image.open(out / "testbed-grid.png")
    assert grid.height > 6 * 96


def test_a_bench_without_the_target_is_refused_before_any_image(tmp_path):
    out = tmp_path / "demo"
    result = _demo("-o", str(out), "--bench", str(_bench(tmp_path, {"ring", "alice"}, per_concept=1)))
    assert result.returncode == 2, result.stderr
    assert "error: target 'circle' is not a concept of bench 'testbed'" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
