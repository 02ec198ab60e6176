import json

import pytest
from typer.testing import CliRunner

from patchkit.backend import pipeline
from patchkit.cli.app import app
from patchkit.models import refs, weights
from patchkit.services import testbed
from patchkit.testbed.judging import JudgePanel

runner = CliRunner()


def test_shipped_judges_are_accurate_on_fresh_ground_truth():
    accuracy = testbed.judge_accuracy(JudgePanel.load(), per_category=300, seed=123)
    assert set(accuracy) == {"id", "object", "style", "nsfw"}
    for category, value in accuracy.items():
        assert value >= testbed.JUDGE_BAR, f"{category} judge: {value:.3f}"


def test_quick_build_writes_a_loadable_pipeline_and_judges(tmp_path):
    out = tmp_path / "tb"
    result = runner.invoke(app, ["testbed", "build", "--out", str(out), "--quick", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["seed"] == 3
    assert set(report["reconstruction_rate"]) >= {"alice", "john doe", "ring", "neon", "gore"}
    assert (out / "build_report.json").is_file()
    info = weights.describe(refs.resolve(str(out)))
    assert info.family == "sd1"
    pipe = pipeline.load_pipeline(refs.resolve(str(out)))
    assert pipe.tokenizer("a photo of john doe").input_ids[4:6] != pipe.tokenizer("a photo of alice").input_ids[4:6]
    assert len(JudgePanel.load(out / "judges").judges) == 4
    again = runner.invoke(app, ["testbed", "build", "--out", str(out), "--quick"])
    assert again.exit_code == 4


def test_check_refuses_zero_images():
    result = runner.invoke(app, ["testbed", "check", "-n", "0"])
    assert result.exit_code == 2
    assert "at least 1" in result.output


@pytest.mark.slow
def test_shipped_testbed_meets_its_quality_bars():
    """The acceptance bar: every concept is generated and recognised >= 80% of the time."""
    result = testbed.check("testbed", images_per_concept=32)
    assert result.passed, result.failures()
    assert len(result.generation) == 13
