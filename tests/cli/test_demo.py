import subprocess
import sys

from PIL import Image


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "patchkit", "demo", "-o", str(out), "-n", "4"],
        capture_output=True,
        text=True,
        check=False,
        env={"NO_COLOR": "1", "COLUMNS": "160", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout and "gore" in result.stdout
    assert "circle (forgotten)" in result.stdout and "before" in result.stdout
    assert (out / "no-circle.safetensors").is_file()
    assert (out / "safe-testbed" / "patchkit.json").is_file() and "applied:" in result.stdout
    assert "testbed-no-circle@1.0.0" in result.stdout  # the example registry is listed
    grid = Image.open(out / "testbed-grid.png")
    assert grid.height > 6 * 96
