"""Scoring end to end on the shipped testbed, with a real patch loaded by diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from patchkit.backend import pipeline
from patchkit.cli.app import app
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.score import score
from patchkit.testbed.conceptbench_build import build_testbed_bench
from tests.helpers import hand_made_forget_patch

runner = CliRunner()
SMALL = ("alice", "bella", "circle", "ring", "square", "neon")


def small_bench(tmp_path: Path, per_concept: int = 8, **extra) -> Path:
    data = build_testbed_bench()
    data["concepts"] = [
        {**c, "images_per_prompt": max(1, per_concept // len(c["prompts"]))}
        for c in data["concepts"]
        if c["name"] in SMALL
    ]
    data["judges"] = {k: v for k, v in data["judges"].items() if k in {"id", "object", "style"}}
    data.update(extra)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def forget_circle(tmp_path_factory) -> Path:
    """Cross-attention keys/values edited by hand so that "circle" prompts read as "square"."""
    pipe = pipeline.load_pipeline(refs.resolve("testbed"))
    data = build_testbed_bench()
    retain = [p for c in data["concepts"] if c["name"] not in ("circle", "square") for p in c["prompts"]]
    retain += ["a photo of a square", "a square", "a red square"]
    out = tmp_path_factory.mktemp("patches") / "circle-to-square.safetensors"
    concept = ["a photo of a circle", "a circle", "a red circle", "a blue circle"]
    anchor = ["a photo of a square", "a square", "a red square", "a blue square"]
    return hand_made_forget_patch(pipe, concept, anchor, retain, out)


def test_score_moves_for_the_target_only(tmp_path, forget_circle):
    bench = small_bench(tmp_path, per_concept=16)
    report = score(ModelSource("testbed"), patches=[forget_circle], bench_path=bench, targets=["circle"])
    rows = {c.concept: c for c in report.concepts}
    assert rows["circle"].before.score >= 0.75
    assert rows["circle"].after.score <= 0.2
    for name in ("alice", "bella", "ring", "square", "neon"):
        assert rows[name].after.score >= rows[name].before.score - 0.15, name
    assert report.collateral["object"] >= -0.1


def test_scores_are_exactly_reproducible(tmp_path):
    bench = small_bench(tmp_path, per_concept=4)
    first = score(ModelSource("testbed"), bench_path=bench).to_json()
    second = score(ModelSource("testbed"), bench_path=bench).to_json()
    assert [c["before"]["hits"] for c in first["concepts"]] == [c["before"]["hits"] for c in second["concepts"]]
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_cli_writes_report_grids_and_fails_the_gate(tmp_path, forget_circle):
    bench = small_bench(tmp_path, per_concept=4)
    out = tmp_path / "report"
    args = ["score", "testbed", "--bench", str(bench), "--patch", str(forget_circle), "--target", "circle"]
    result = runner.invoke(app, [*args, "-o", str(out), "--max-target", "0.0", "--max-collateral", "0.0", "--json"])
    report = json.loads((out / "report.json").read_text())
    assert report["definition"] == "mscore/1"
    assert {c["concept"] for c in report["concepts"]} == set(SMALL)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{n}.png" for n in SMALL)
    passed = report["gate"]["passed"]
    assert result.exit_code == (0 if passed else 6), result.output
    lenient = runner.invoke(app, [*args, "--max-target", "0.5", "--max-collateral", "0.5"])
    assert lenient.exit_code == 0, lenient.output
    assert "release gate passed" in lenient.output


def test_bad_bench_and_patch_inputs(tmp_path):
    broken = small_bench(tmp_path)
    data = json.loads(broken.read_text())
    data["concepts"][0]["images_per_prompt"] = 0
    broken.write_text(json.dumps(data))
    result = runner.invoke(app, ["score", "testbed", "--bench", str(broken)])
    assert result.exit_code == 3 and "$.concepts[0].images_per_prompt" in result.output
    unknown = small_bench(tmp_path)
    data = json.loads(unknown.read_text())
    data["judges"]["id"] = {"name": "oracle"}
    unknown.write_text(json.dumps(data))
    result = runner.invoke(app, ["score", "testbed", "--bench", str(unknown)])
    assert result.exit_code == 2 and "unknown judge 'oracle'" in result.output
    not_lora = tmp_path / "not-lora.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"hello": torch.zeros(2)}, str(not_lora))
    result = runner.invoke(
        app, ["score", "testbed", "--bench", str(small_bench(tmp_path, per_concept=1)), "--patch", str(not_lora)]
    )
    assert result.exit_code == 3 and "not a LoRA patch" in result.output


def test_capacity_probe_reports_both_sides(tmp_path, forget_circle):
    data = json.loads(small_bench(tmp_path, per_concept=8).read_text())
    data["concepts"] = [c for c in data["concepts"] if c["name"] in ("circle", "alice")]
    data["judges"] = {k: v for k, v in data["judges"].items() if k in ("id", "object")}
    for concept in data["concepts"]:  # the shipped references, found relative to this bench file
        from patchkit.testbed.paths import TESTBED_ROOT

        concept["reference_images"] = str(TESTBED_ROOT / concept["reference_images"])
    bench = tmp_path / "capacity.json"
    bench.write_text(json.dumps(data))
    report = score(ModelSource("testbed"), patches=[forget_circle], bench_path=bench, targets=["circle"], capacity=True)
    rows = {c.concept: c for c in report.concepts}
    for name in ("circle", "alice"):
        assert rows[name].capacity_before is not None and rows[name].capacity_after is not None
        assert rows[name].capacity_before.n == 8
    # The base model can be taught each concept from 8 reference images.
    assert rows["circle"].capacity_before.score >= 0.5
    assert rows["alice"].capacity_before.score >= 0.5
    assert "capacity_after" in report.to_json()["concepts"][0]


def test_capacity_needs_reference_images(tmp_path):
    bench = small_bench(tmp_path, per_concept=1)
    data = json.loads(bench.read_text())
    for concept in data["concepts"]:
        concept.pop("reference_images", None)
    bench.write_text(json.dumps(data))
    result = runner.invoke(app, ["score", "testbed", "--bench", str(bench), "--capacity"])
    assert result.exit_code == 2 and "has no reference_images" in result.output


def test_score_then_attack_joins_the_reports_and_writes_them_in_one_folder(tmp_path, forget_circle):
    """score --attack (issue 18): attack/1 on the targets after the scores, with the same patches;
    with -o, OUTPUT/attack/ holds the attack report, written in the same atomic step."""
    from patchkit.services.attack import AttackBudget, AttackRequest, attack

    bench = small_bench(tmp_path, per_concept=4)
    budget = AttackBudget(images_per_prompt=1, compositions=4)
    request = AttackRequest(("circle",), attacks=("composition",), budget=budget, max_asr=0.0)

    def then_attack():
        return attack(ModelSource("testbed"), request, patches=[forget_circle], bench_path=bench)

    out = tmp_path / "report"
    report = score(ModelSource("testbed"), patches=[forget_circle], bench_path=bench, targets=["circle"], output=out,
                   then_attack=then_attack)  # fmt: skip
    assert report.attacks is not None
    written = json.loads((out / "report.json").read_text())
    attacked = json.loads((out / "attack" / "report.json").read_text())
    assert written["attack"] == attacked == report.attacks.to_json()
    assert attacked["patches"] == [str(forget_circle)] and attacked["concepts"][0]["concept"] == "circle"
    assert (out / "attack" / "circle.png").is_file() and out / "attack" / "circle.png" in report.grids


@pytest.mark.parametrize(
    ("extra", "needle"), [(["--attack"], "--target"), (["--target", "circle", "--max-asr", "0.2"], "--attack")]
)
def test_score_attack_options_that_cannot_work_are_refused_before_any_work(tmp_path, extra, needle):
    result = runner.invoke(app, ["score", "testbed", "-o", str(tmp_path / "out"), *extra])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_without_target_the_patches_manifests_name_it_and_it_is_no_bystander(tmp_path, forget_circle):
    """A patchkit patch says what it forgets: scored without --target, that concept is the target
    and its fall is not counted as collateral; a LoRA without a manifest names no target."""
    from patchkit.services.forget import forget
    from patchkit.services.forget_request import ForgetRequest
    from patchkit.services.score import targets_from_manifests
    from patchkit.training.prompts import Concept

    patch = tmp_path / "no-circle.safetensors"
    forget(ForgetRequest(ModelSource("testbed"), [Concept("circle", "object")], patch, method="closed-form"))
    report = score(ModelSource("testbed"), patches=[patch], bench_path=small_bench(tmp_path, per_concept=4))
    rows = {c.concept: c for c in report.concepts}
    assert [name for name, row in rows.items() if row.target] == ["circle"]
    assert rows["circle"].after is not None and rows["circle"].after.score <= 0.25  # forgotten, and no bystander
    bystanders = [rows[n].after.score - rows[n].before.score for n in ("ring", "square")]  # type: ignore[union-attr]
    assert report.collateral["object"] == pytest.approx(sum(bystanders) / 2)
    assert targets_from_manifests([forget_circle], set(SMALL)) == []
