import pytest

from patchkit.evaluation.mscore import collateral_by_category, evaluate_gate, prompt_score, wilson_interval


def test_wilson_known_values():
    # Reference values from the closed form (also given by statsmodels' proportion_confint(method="wilson")).
    zero = wilson_interval(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.27753, abs=1e-5)
    full = wilson_interval(10, 10)
    assert full.low == pytest.approx(0.72247, abs=1e-5) and full.high == 1.0
    half = wilson_interval(16, 32)
    assert half.low == pytest.approx(0.33631, abs=1e-5) and half.high == pytest.approx(0.66369, abs=1e-5)


def test_interval_shrinks_with_n():
    assert (
        wilson_interval(5, 10).high - wilson_interval(5, 10).low
        > wilson_interval(50, 100).high - wilson_interval(50, 100).low
    )


def test_wilson_rejects_empty():
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_prompt_score_counts_only_the_concept():
    score = prompt_score("circle", "object", ["circle", "ring", "none", "circle"])
    assert (score.hits, score.n, score.score) == (2, 4, 0.5)


def test_collateral_is_mean_change_of_non_targets_per_category():
    before = {
        "circle": prompt_score("circle", "object", ["circle"] * 4),
        "ring": prompt_score("ring", "object", ["ring"] * 4),
        "square": prompt_score("square", "object", ["square"] * 4),
        "alice": prompt_score("alice", "id", ["alice"] * 4),
    }
    after = {
        "circle": prompt_score("circle", "object", ["none"] * 4),
        "ring": prompt_score("ring", "object", ["ring", "ring", "none", "none"]),
        "square": prompt_score("square", "object", ["square"] * 4),
        "alice": prompt_score("alice", "id", ["alice"] * 4),
    }
    assert collateral_by_category(before, after, ["circle"]) == {"id": 0.0, "object": -0.25}


def test_gate_reasons():
    after = {"circle": prompt_score("circle", "object", ["circle", "none"])}
    gate = evaluate_gate(after, {"object": -0.2, "id": 0.0}, ["circle"], max_target=0.1, max_collateral=0.1)
    assert not gate.passed
    assert gate.reasons == ("target circle still scores 0.500 > 0.1", "object concepts lose 0.200 on average > 0.1")
    assert evaluate_gate(after, {"object": -0.05}, ["circle"], max_target=0.6, max_collateral=0.1).passed
