"""The signing commands as users run them: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.fmn import ForgetSettings
from patchkit.training.prompts import Concept


def patchkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchkit", *args], capture_output=True, text=True, env=env)


def test_key_sign_show_verify_trust_round_trip(tiny_models, tmp_path):
    env = {**os.environ, "PATCHKIT_TRUST_STORE": str(tmp_path / "trust"), "NO_COLOR": "1"}
    folder, _ = tiny_models["sd15"]
    patch = tmp_path / "p.safetensors"
    settings = ForgetSettings(steps=1, images_per_concept=1, batch_size=1)
    forget(ForgetRequest(ModelSource(str(folder)), [Concept("circle", "object")], patch, settings=settings))

    shown = patchkit("show", str(patch), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["patch_id_matches"] is True

    assert patchkit("key", "new", "--out", str(tmp_path), "--name", "team", env=env).returncode == 0
    missing = patchkit("verify", str(patch), "--pubkey", str(tmp_path / "team.pub"), env=env)
    assert missing.returncode == 7 and "no signature" in missing.stderr
    assert patchkit("sign", str(patch), "--key", str(tmp_path / "team.key"), env=env).returncode == 0
    ok = patchkit("verify", str(patch), "--pubkey", str(tmp_path / "team.pub"), "--json", env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["verified"] is True

    untrusted = patchkit("verify", str(patch), "--trust-store", env=env)
    assert untrusted.returncode == 7 and "not in the trust store" in untrusted.stderr
    assert patchkit("trust", "add", str(tmp_path / "team.pub"), "--name", "release team", env=env).returncode == 0
    named = patchkit("verify", str(patch), "--trust-store", env=env)
    assert named.returncode == 0 and "release team" in named.stderr

    raw = bytearray(patch.read_bytes())
    raw[len(raw) // 2] ^= 1
    Path(patch).write_bytes(bytes(raw))
    tampered = patchkit("verify", str(patch), "--trust-store", env=env)
    assert tampered.returncode == 7
    errors = [line for line in tampered.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not verify" in errors[0]


def test_key_new_creates_a_private_folder_and_refuses_a_file_in_its_place(tmp_path):
    keys = tmp_path / "new" / "keys"
    run = patchkit("key", "new", "--out", str(keys), env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    assert (keys / "patchkit.key").is_file() and (keys.stat().st_mode & 0o777) == 0o700
    occupied = tmp_path / "occupied"
    occupied.write_text("not a folder")
    refused = patchkit("key", "new", "--out", str(occupied), env=dict(os.environ))
    assert refused.returncode == 4 and "is not a folder" in refused.stderr, refused.stderr
    assert occupied.read_text() == "not a folder"


def test_verify_of_a_missing_patch_is_a_missing_input_not_a_bad_signature(tmp_path):
    keys = tmp_path / "keys"
    assert patchkit("key", "new", "--out", str(keys), env=dict(os.environ)).returncode == 0
    run = patchkit("verify", str(tmp_path / "gone.safetensors"), "--pubkey", str(keys / "patchkit.pub"),
                   env=dict(os.environ))  # fmt: skip
    assert run.returncode == 3 and "does not exist" in run.stderr, run.stderr
