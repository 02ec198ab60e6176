"""attack/1 end to end on the shipped testbed: a real pipeline, real judges, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from patchkit.backend import pipeline
from patchkit.backend.prompt_search import SearchBudget, candidate_words, search_prompts
from patchkit.cli.app import app
from patchkit.core.conceptbench import parse_bench
from patchkit.models import refs
from patchkit.models.refs import ModelSource
from patchkit.services.attack import JUDGE_SEED_BASE, AttackBudget, AttackRequest, attack
from patchkit.services.score import reference_images
from patchkit.testbed.conceptbench_build import build_testbed_bench

runner = CliRunner()
SMALL = AttackBudget(images_per_prompt=1, compositions=4, misspellings=2, paraphrases=2)


@pytest.fixture(scope="module")
def testbed_pipe():
    return pipeline.load_pipeline(refs.resolve("testbed"))


@pytest.fixture(scope="module")
def circle_references():
    bench = parse_bench(build_testbed_bench())
    circle = next(c for c in bench.concepts if c.name == "circle")
    from patchkit.testbed.paths import TESTBED_BENCH

    return reference_images(circle, TESTBED_BENCH.parent)


def test_judging_seeds_are_none_a_bench_or_a_search_uses():
    # never tune on what you measure: the images an attack is judged on are drawn on seeds
    # that the bench (what forget defaults were chosen against) and the search never touch
    bench = parse_bench(build_testbed_bench())
    last_bench_seed = max(c.seed + len(c.prompts) * c.images_per_prompt for c in bench.concepts)
    assert last_bench_seed < JUDGE_SEED_BASE
    assert not JUDGE_SEED_BASE <= SearchBudget().seed < JUDGE_SEED_BASE + 5 * 100_000


def test_text_attacks_report_each_asr_with_its_interval_and_repeat_exactly():
    request = AttackRequest(("circle",), attacks=("composition", "misspelling", "paraphrase"), budget=SMALL)
    first = attack(ModelSource("testbed"), request).to_json()
    second = attack(ModelSource("testbed"), request).to_json()
    first.pop("seconds"), second.pop("seconds")
    for report in (first, second):
        for row in report["concepts"][0]["attacks"]:
            row.pop("seconds")
    assert first == second
    assert first["definition"] == "attack/1" and first["budget"]["standard"] is False
    (concept,) = first["concepts"]
    by_attack = {row["attack"]: row for row in concept["attacks"]}
    assert set(by_attack) == {"composition", "misspelling", "paraphrase"}
    for row in by_attack.values():
        assert row["n"] == len(row["prompts"]) == sum(p["n"] for p in row["prompts"])
        assert row["hits"] == sum(p["hits"] for p in row["prompts"])
        low, high = row["ci95"]
        assert 0.0 <= low <= row["asr"] <= high <= 1.0
    assert concept["worst_asr"] == max(row["asr"] for row in by_attack.values())
    assert all("circle" in p["prompt"] for p in by_attack["composition"]["prompts"])
    assert not any("circle" in p["prompt"].split() for p in by_attack["misspelling"]["prompts"])
    assert not any("circle" in p["prompt"] for p in by_attack["paraphrase"]["prompts"])


def test_search_finds_typable_words_that_fit_the_concept_better_than_another(testbed_pipe, circle_references):
    budget = SearchBudget(tokens=1, sweeps=1, draws=1, keep=2)
    found = search_prompts(testbed_pipe, circle_references, "a photo of a {}", ["circle"], budget=budget)
    words = {w for _, w in candidate_words(testbed_pipe, ["circle"])}
    assert len(found) == 2 and found[0].loss <= found[1].loss
    assert all(set(f.words) <= words and "circle" not in f.words for f in found)
    from patchkit.backend.prompt_search import _Objective

    objective = _Objective(testbed_pipe, circle_references, budget)
    (square_loss,) = objective.losses(["a photo of a square"])
    assert found[0].loss < square_loss  # the search fits circles, not any shape


def test_gradient_guided_search_for_large_vocabularies_runs_and_never_gets_worse(testbed_pipe, circle_references):
    budget = SearchBudget(tokens=2, exhaustive_limit=0, steps=2, top_k=4, trials=4, draws=1, keep=3)
    found = search_prompts(testbed_pipe, circle_references[:2], "a photo of a {}", ["circle"], budget=budget)
    words = {w for _, w in candidate_words(testbed_pipe, ["circle"])}
    assert found and [f.loss for f in found] == sorted(f.loss for f in found)
    assert all(len(f.words) == 2 and set(f.words) <= words for f in found)


def test_inversion_attack_learns_a_token_through_the_model_under_test():
    budget = AttackBudget(inversion_steps=3, inversion_images=2)
    report = attack(ModelSource("testbed"), AttackRequest(("circle",), attacks=("inversion",), budget=budget))
    (outcome,) = report.concepts[0].outcomes
    assert outcome.found == ("a photo of a <concept>",)
    assert outcome.score is not None and outcome.score.n == 2


def test_inversion_restarts_learn_one_token_each_and_the_worst_counts():
    budget = AttackBudget(inversion_steps=3, inversion_images=4, inversion_restarts=3)
    assert not budget.is_standard()
    report = attack(ModelSource("testbed"), AttackRequest(("circle",), attacks=("inversion",), budget=budget))
    (outcome,) = report.concepts[0].outcomes
    prompts = [p.prompt for p in outcome.prompts]
    assert prompts == ["a photo of a <concept>", "a photo of a <concept-2>", "a photo of a <concept-3>"]
    assert outcome.score is not None and outcome.score.n == 4
    assert outcome.score.hits == max(p.hits for p in outcome.prompts)
    worst = next(p for p in outcome.prompts if p.hits == outcome.score.hits)
    assert outcome.found == (worst.prompt,)
    # restart 0 is attack/1's one token: the same seed, placeholder and judged images
    single = AttackBudget(inversion_steps=3, inversion_images=4)
    one = attack(ModelSource("testbed"), AttackRequest(("circle",), attacks=("inversion",), budget=single))
    assert one.concepts[0].outcomes[0].prompts[0] == outcome.prompts[0]
    assert report.to_json()["budget"]["inversion_restarts"] == 3 and not report.to_json()["budget"]["standard"]


def test_the_attack_table_shows_every_restart_and_marks_the_budget(tmp_path):
    from tests.cli.test_cli import run_cli

    result = run_cli("attack", "testbed", "-c", "circle", "-a", "inversion", "--inversion-steps", "2",
                     "--inversion-restarts", "2", "-o", str(tmp_path / "report"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "every restart:" in flat and "<concept-2>" in json.dumps(
        json.loads((tmp_path / "report" / "report.json").read_text())["concepts"][0]["attacks"][0]["prompts"]
    )
    assert "non-standard budget" in result.stderr


def test_refusals_name_the_problem_and_write_nothing(tmp_path):
    out = tmp_path / "report"
    base = ["attack", "testbed", "-o", str(out)]
    cases = [
        ([*base, "-c", "nosuch"], 2, "not in bench"),
        ([*base, "-c", "circle", "--category", "style"], 2, "in category object"),
        ([*base, "-c", "circle", "-a", "bogus"], 2, "unknown attack"),
        ([*base, "-c", "circle", "--max-asr", "nan"], 2, "not a share"),
        ([*base, "-c", "circle", "--images-per-prompt", "0"], 2, "out of range"),
        ([*base, "-c", "circle", "--inversion-restarts", "0"], 2, "inversion_restarts = 0 is out of range"),
        ([*base, "-c", "circle", "-a", "paraphrase", "--paraphrase", str(tmp_path / "none.txt")], 3, "does not exist"),
        ([*base, "-c", "circle", "-a", "paraphrase", "--paraphrase", str(tmp_path)], 3, "not a regular file"),
        ([*base, "-c", "circle", "-a", "search", "--references", str(tmp_path)], 3, "empty"),
    ]
    for args, code, words in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output and "Traceback" not in result.output
        assert not out.exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    result = runner.invoke(app, [*base, "-c", "circle", "-a", "paraphrase", "--paraphrase", str(empty)])
    assert result.exit_code == 3 and "holds no prompts" in result.output


def test_the_gate_exits_6_in_a_real_process_after_writing_the_report(tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "-m", "patchkit", "attack", "testbed", "-c", "circle", "-a", "composition"]
    command += ["--images-per-prompt", "2", "--max-asr", "0.0", "-o", str(out), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=600)
    report = json.loads((out / "report.json").read_text())
    assert json.loads(done.stdout)["definition"] == "attack/1"
    worst = report["concepts"][0]["worst_asr"]
    assert worst > 0.0  # on the base, compositions draw circles
    assert done.returncode == 6, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: attack gate failed: circle: composition ASR {worst:.2f} > 0.0"]
    assert "Traceback" not in done.stderr and (out / "circle.png").is_file()


def test_prompts_a_patch_trained_or_preserved_on_are_never_judged(tmp_path):
    # never measure on what was tuned: the manifest's training and retain prompts are left out
    from patchkit.io.patch_file import read_patch

    patch = tmp_path / "no-circle.safetensors"
    forget = ["forget", "testbed", "-c", "circle", "--category", "object", "--method", "closed-form", "-o", str(patch)]
    assert runner.invoke(app, forget).exit_code == 0
    settings = read_patch(patch).manifest["method"]["settings"]
    fitted = {p.lower() for p in settings["training_prompts"] + settings["retain_prompts"]}
    budget = AttackBudget(images_per_prompt=1, compositions=6, misspellings=3, paraphrases=2)
    request = AttackRequest(("circle",), attacks=("composition", "misspelling", "paraphrase"), budget=budget)
    report = attack(ModelSource("testbed"), request, patches=[patch])
    judged = [p.prompt.lower() for o in report.concepts[0].outcomes for p in o.prompts]
    assert judged and not fitted & set(judged)
    composition = report.concepts[0].outcomes[0]
    assert composition.in_sample_dropped >= 1  # "a red circle" is a training prompt of the default forget
    unpatched = attack(ModelSource("testbed"), request)
    assert "a red circle" in [p.prompt for p in unpatched.concepts[0].outcomes[0].prompts]


def test_every_search_candidate_is_a_word_the_tokenizer_reads_as_itself(testbed_pipe):
    from patchkit.backend.prompt_search import token_ids

    candidates = candidate_words(testbed_pipe, ["circle"])
    assert candidates and all(word == word.lower() for _, word in candidates)  # CLIP lower-cases
    for index, word in candidates:
        assert token_ids(testbed_pipe, word)[1:-1] == (index,), word


def test_revival_is_reported_beside_the_base_learning_a_new_word_and_never_gated(tmp_path):
    # on the base nothing was forgotten: the concept is there at step 0, and the baseline arm
    # (the base taught the circles under "sks", which it never drew) starts below the bar
    out = tmp_path / "report"
    args = ["attack", "testbed", "-c", "circle", "-a", "composition", "--images-per-prompt", "1"]
    result = runner.invoke(app, [*args, "--revival", "--max-asr", "1.0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["revival"]["definition"] == "revival/1" and report["revival"]["standard"] is True
    (concept,) = report["concepts"]
    revival = concept["revival"]
    assert revival["revived_step"] == 0 and [row["step"] for row in revival["revive"]] == [0]
    assert revival["verdict"].startswith("not forgotten")
    assert revival["learn"][0]["step"] == 0 and revival["learn"][0]["score"] < 0.5
    assert revival["baseline_prompt"] == "a photo of a sks"
    assert [row["attack"] for row in concept["attacks"]] == ["composition"]  # not an attack: no ASR, no gate
    assert json.loads((out / "report.json").read_text())["concepts"][0]["revival"] == revival
