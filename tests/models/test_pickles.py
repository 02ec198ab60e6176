"""Pickle conversion leaves no copy of a model behind, even when its process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

CONVERT_THEN = """
import os, signal, sys
from pathlib import Path
from patchkit.models.pickles import pickle_to_safetensors
out = pickle_to_safetensors(Path(sys.argv[1]))
print(out.parent.name, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup: what a kill -9 or a crash leaves
"""


def _convert(pickle, then: str, tmp) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", CONVERT_THEN, str(pickle), then], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


def test_a_killed_conversion_is_swept_by_the_next_one_and_a_clean_exit_leaves_nothing(tmp_path):
    pickle = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2, 2)}}, pickle)
    temp = tmp_path / "temp"
    temp.mkdir()
    killed = _convert(pickle, "kill", temp)
    assert killed.returncode == -signal.SIGKILL
    left = temp / killed.stdout.strip()
    assert left.is_dir()  # the killed process could not clean up
    done = _convert(pickle, "exit", temp)
    assert done.returncode == 0, done.stderr
    assert not left.exists()  # swept: its pid is gone
    assert not any(temp.iterdir())  # and the clean run removed its own at exit
