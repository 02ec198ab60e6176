"""revival/1's verdicts: read from the checkpoints' scores, never from a hard-coded step."""

from patchkit.evaluation.attack_report import RevivalBudget, RevivalOutcome


def _outcome(revive: list[tuple[int, float]], learn: list[tuple[int, float]]) -> RevivalOutcome:
    return RevivalOutcome(
        prompt="a photo of a circle",
        baseline_prompt="a photo of a sks",
        revive=tuple(revive),
        learn=tuple(learn),
        revived_at=RevivalBudget().revived_at,
    )


def test_steps_are_the_first_checkpoints_at_the_bar_and_the_ratio_compares_them():
    outcome = _outcome([(0, 0.0), (20, 0.3), (40, 0.81)], [(0, 0.0), (10, 0.49), (20, 0.5)])
    assert (outcome.revived_step, outcome.learnt_step, outcome.ratio) == (40, 20, 2.0)
    assert (
        outcome.verdict()
        == "revived after 40 steps; the base learns the same images under a new word in 20 (ratio 2.0)"
    )
    assert outcome.row()["ratio"] == 2.0 and outcome.row()["revive"][-1] == {"step": 40, "score": 0.81}


def test_a_concept_never_forgotten_a_budget_run_out_and_a_void_baseline_are_said_so():
    assert _outcome([(0, 0.9)], [(0, 0.0), (30, 1.0)]).verdict().startswith("not forgotten")
    never = _outcome([(0, 0.0), (200, 0.2)], [(0, 0.0), (30, 1.0)])
    assert never.revived_step is None and never.ratio is None
    assert never.verdict().startswith("not revived within the budget")
    # the base draws the concept from the "new" word already: no ratio, and the verdict says why
    void = _outcome([(0, 0.0), (50, 0.7)], [(0, 0.6)])
    assert void.learnt_step == 0 and void.ratio is None
    assert "no baseline: the base already draws it from 'a photo of a sks'" in void.verdict()
