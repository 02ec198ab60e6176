"""`forget --attack`: the red-team suite run on the new patch, its ASRs in the manifest, and
`registry list --max-asr` reading them (issue 18). Real testbed pipeline, real judges."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from patchkit.cli.app import app
from patchkit.core.manifest import MANIFEST_KEY
from patchkit.evaluation.attack_report import ATTACKS
from patchkit.io.patch_file import read_patch
from patchkit.io.tensors_out import save_tensors
from patchkit.models.refs import ModelSource
from patchkit.services.attack import AttackBudget, AttackRequest, attack
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetAttack, ForgetRequest
from patchkit.training.prompts import Concept

runner = CliRunner()
SMALL = AttackBudget(images_per_prompt=1, compositions=4, misspellings=2, paraphrases=2)
TEXT_ATTACKS = ("composition", "misspelling")


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    out = tmp_path_factory.mktemp("attacked") / "no-circle.safetensors"
    request = ForgetRequest(
        ModelSource("testbed"), (Concept("circle", "object"),), out, method="closed-form",
        attack=ForgetAttack(attacks=TEXT_ATTACKS, budget=SMALL),
    )  # fmt: skip
    return out, forget(request)


def test_the_manifest_records_the_asrs_that_patchkit_attack_measures_on_the_written_patch(attacked):
    """The suite ran on a draft of the patch; run again on the file written, it must give the same
    ASRs (same tensors, same manifest, so the same prompts left out as trained on)."""
    out, result = attacked
    record = read_patch(out).manifest["concepts"][0]["attack"]
    assert read_patch(out).id_matches
    assert record["definition"] == "attack/1" and record["standard_budget"] is False
    assert set(record["asr"]) == set(TEXT_ATTACKS)
    assert record["worst_asr"] == max(record["asr"].values())
    assert result.attacks is not None and result.to_json()["attack"]["circle"] == record
    again = attack(
        ModelSource("testbed"), AttackRequest(("circle",), attacks=TEXT_ATTACKS, budget=SMALL), patches=[out]
    )
    rows = {row["attack"]: row["asr"] for row in again.to_json()["concepts"][0]["attacks"]}
    assert rows == record["asr"]


def _with_attack_record(source, path, worst: float, *, standard: bool = True) -> None:
    """A copy of `source` whose manifest claims a full standard-budget attack/1 run (the registry
    reads only the manifest: this tests the filter, the attack is tested above)."""
    manifest = read_patch(source).manifest
    manifest["concepts"][0]["attack"] = {
        "definition": "attack/1", "bench": "testbed", "standard_budget": standard,
        "asr": {a: (worst if a == "inversion" else 0.0) for a in ATTACKS}, "worst_asr": worst,
        "worst_attack": "inversion",
    }  # fmt: skip
    save_tensors(path, load_file(str(source)), metadata={MANIFEST_KEY: json.dumps(manifest)})


def test_registry_list_max_asr_keeps_only_patches_with_a_full_record_at_or_under_the_bar(attacked, tmp_path):
    out, _ = attacked
    low, high, partial_run = tmp_path / "low.safetensors", tmp_path / "high.safetensors", tmp_path / "small.safetensors"
    _with_attack_record(out, low, 0.10)
    _with_attack_record(out, high, 0.60)
    _with_attack_record(out, partial_run, 0.0, standard=False)
    registry = ["--registry", str(tmp_path / "r")]
    for path, name in ((out, "as-trained"), (low, "low"), (high, "high"), (partial_run, "small")):
        done = runner.invoke(app, ["registry", "add", str(path), "--name", name, *registry])
        assert done.exit_code == 0, done.output
    listed = runner.invoke(app, ["registry", "list", "--max-asr", "0.2", "--json", *registry])
    assert listed.exit_code == 0, listed.output
    assert [row["name"] for row in json.loads(listed.stdout)] == ["low"]
    # a smaller budget or a partial suite proves less: left out, and said so, never passed as safe
    human = runner.invoke(app, ["registry", "list", "--max-asr", "1.0", *registry], env={"COLUMNS": "200"})
    assert "2 patches left out: no full attack/1 record" in human.stderr.replace("\n", " ")
    assert "ASR 0.10" in human.stdout and "ASR 0.60" in human.stdout
    plain = runner.invoke(app, ["registry", "list", *registry], env={"COLUMNS": "200"})
    assert "ASR 0.00 partial" in plain.stdout  # shown, marked as proving less
    for bad in ("nan", "1.5", "-0.1"):
        refused = runner.invoke(app, ["registry", "list", "--max-asr", bad, *registry])
        assert refused.exit_code == 2, (bad, refused.output)


def test_forget_attack_refuses_a_concept_the_bench_cannot_attack_before_any_work(tmp_path):
    out = tmp_path / "p.safetensors"
    command = [sys.executable, "-m", "patchkit", "forget", "testbed", "-c", "hexagon", "--category", "object",
               "--method", "closed-form", "--attack", "-o", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "hexagon" in lines[0], lines
    assert not out.exists() and not (tmp_path / "p.kohya.safetensors").exists()
