"""`patchkit forget` as a user runs it: a real subprocess interrupted with Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys


def test_ctrl_c_during_forget_exits_130_and_leaves_no_file(tiny_models, tmp_path):
    import signal
    import time

    folder, _ = tiny_models["sd15"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [sys.executable, "-m", "patchkit", "forget", str(folder), "-c", "circle", "--category", "object"]
    process = subprocess.Popen(
        [*command, "--steps", "100000", "-o", str(out_dir / "p.safetensors")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    time.sleep(12)  # past loading and image generation, into the training loop
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert list(out_dir.iterdir()) == []
