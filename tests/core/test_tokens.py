from patchkit.core.tokens import concept_positions, end_of_text_positions


def test_single_and_repeated_occurrences():
    assert concept_positions([0, 5, 7, 9, 7, 2], [7]) == [2, 4]


def test_multi_token_concept_marks_every_token():
    assert concept_positions([0, 1, 4, 5, 2, 2], [4, 5]) == [2, 3]


def test_partial_match_is_not_a_match():
    assert concept_positions([0, 4, 6, 5, 2], [4, 5]) == []
    assert concept_positions([0, 4], []) == []


def test_end_of_text_positions_after_the_concept():
    ids = [49406, 320, 1125, 49407, 49407, 49407]
    assert end_of_text_positions(ids, 49407, after=2) == [3, 4, 5]
    assert end_of_text_positions(ids, 49407, after=4) == [5]
