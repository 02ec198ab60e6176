"""`patchkit registry` as a user types it: JSON output, tables, exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from patchkit.cli.app import app
from patchkit.services.fixtures import synthetic_patch

runner = CliRunner()


def test_add_list_show_verify_rm_gc(tiny_models, tmp_path):
    patch = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")
    added = runner.invoke(app, ["registry", "add", str(patch), "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["ref"] == "synthetic-circle@0.0.1"
    listed = json.loads(runner.invoke(app, ["registry", "list", "--concept", "circle", "--json"]).stdout)
    assert [e["name"] for e in listed] == ["synthetic-circle"]
    assert json.loads(runner.invoke(app, ["registry", "list", "--concept", "noir", "--json"]).stdout) == []
    table = runner.invoke(app, ["registry", "list"], env={"COLUMNS": "160"})
    # on stdout, as gh and hf print tables, so `patchkit registry list | grep circle` finds it
    assert "synthetic-circle@0.0.1" in table.stdout and "unsigned" in table.stdout
    shown = json.loads(runner.invoke(app, ["registry", "show", "synthetic-circle", "--json"]).stdout)
    assert shown["manifest"]["concepts"][0]["name"] == "circle"
    assert json.loads(runner.invoke(app, ["registry", "verify", "--json"]).stdout)["ok"] is True
    assert runner.invoke(app, ["registry", "rm", "synthetic-circle@0.0.1"]).exit_code == 0
    plan = json.loads(runner.invoke(app, ["registry", "gc", "--dry-run", "--json"]).stdout)
    assert plan["executed"] is False and len(plan["blobs"]) == 1


def test_bad_names_and_corruption_exit_codes(tiny_models, tmp_path):
    patch = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")
    bad = runner.invoke(app, ["registry", "add", str(patch), "--name", "../../etc"])
    assert bad.exit_code == 2 and "path separator" in bad.output
    entry = json.loads(runner.invoke(app, ["registry", "add", str(patch), "--json"]).stdout)
    blob = tmp_path / "registry" / "blobs" / "sha256" / entry["blob"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    verified = runner.invoke(app, ["registry", "verify"])
    assert verified.exit_code == 7 and "corrupted" in verified.output
    applied = runner.invoke(app, ["apply", str(tiny_models["sd15"][0]), "synthetic-circle@0.0.1", "-o",
                                  str(tmp_path / "out")])  # fmt: skip
    assert applied.exit_code == 3 and "corrupted on disk" in applied.output
    assert not (tmp_path / "out").exists()
