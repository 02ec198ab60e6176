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


def _forget(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "patchkit", "forget", "testbed", "-c", "circle", "--category", "object",
               "--method", "closed-form", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_forget_also_writes_the_layout_a1111_and_comfyui_load(tmp_path):
    """Issue 19.2: the PEFT file alone loads nothing in ComfyUI or A1111."""
    import torch
    from safetensors.torch import load_file

    from patchkit.io.patch_file import read_patch

    out = tmp_path / "p.safetensors"
    run = _forget("-o", str(out))
    assert run.returncode == 0, run.stderr
    kohya = tmp_path / "p.kohya.safetensors"
    assert "A1111 and ComfyUI" in run.stderr and str(kohya) in run.stderr.replace("\n", "")
    keys = load_file(str(kohya))
    assert keys and all(k.startswith("lora_unet_") for k in keys)  # the names kohya's loaders map
    assert read_patch(kohya).manifest["format"]["keys"] == "kohya" and read_patch(kohya).id_matches
    assert read_patch(kohya).patch_id == read_patch(out).patch_id  # one patch, two layouts, one id
    ups = sorted(t.abs().sum().item() for k, t in keys.items() if "lora_up" in k)
    peft_ups = sorted(t.abs().sum().item() for k, t in load_file(str(out)).items() if "lora_B" in k)
    assert torch.allclose(torch.tensor(ups), torch.tensor(peft_ups))  # the same deltas, renamed
    again = _forget("-o", str(tmp_path / "q.safetensors"))  # an existing sibling is refused before any work
    assert again.returncode == 0
    (tmp_path / "q.safetensors").unlink()
    refused = _forget("-o", str(tmp_path / "q.safetensors"))
    assert refused.returncode == 4 and "q.kohya.safetensors already exists" in refused.stderr
    assert not (tmp_path / "q.safetensors").exists()
    assert _forget("-o", str(tmp_path / "r.safetensors"), "--no-kohya").returncode == 0
    assert not (tmp_path / "r.kohya.safetensors").exists()


def test_a_refused_fmn_forget_prints_the_error_and_nothing_before_it(tmp_path):
    """The "training images: none given" note once came before refusals found in planning (an
    existing output here), so a refusal was three lines, the first of them not about it."""
    out = tmp_path / "p.safetensors"
    out.write_bytes(b"mine")
    command = [sys.executable, "-m", "patchkit", "forget", "testbed", "-c", "circle", "--category", "object",
               "-o", str(out)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert out.read_bytes() == b"mine"
