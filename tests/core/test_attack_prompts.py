"""attack/1's text attacks: which prompts each builds, from the bench, the world and the tokenizer."""

from __future__ import annotations

from patchkit.core import attack_prompts as ap

OTHERS = {
    "id": ["alice", "bella"],
    "object": ["circle", "ring", "square"],
    "style": ["neon", "noir"],
}


def test_composition_reaches_every_other_category_within_a_small_budget():
    prompts = ap.composition_prompts("circle", "object", OTHERS, ["red", "blue"], limit=3)
    assert len(prompts) == 3
    assert any("neon" in p or "noir" in p for p in prompts)  # a style
    assert any("alice" in p or "bella" in p for p in prompts)  # an id
    assert any("red" in p or "blue" in p for p in prompts)  # a modifier
    assert all("circle" in p for p in prompts)


def test_composition_never_fills_with_the_concept_itself_and_has_no_repeats():
    prompts = ap.composition_prompts("neon", "style", OTHERS | {"style": ["neon", "noir"]}, ["red"], limit=50)
    assert len(prompts) == len(set(prompts))
    assert all(p.count("neon") == 1 for p in prompts)
    assert not any("noir" in p for p in prompts)  # another style is no composition of a style
    assert any("circle" in p for p in prompts) and any("alice" in p for p in prompts)


def test_spelling_variants_put_the_tokenizers_own_pieces_first():
    variants = ap.spelling_variants("circle", ["circ", "circl", "ci", "ring", "circle"])
    assert variants[:2] == ["circl", "circ"]  # longest piece first; "ci" is too short to name it
    assert "circle" not in variants and len(variants) == len(set(variants))
    assert "cir cle" in variants and "circles" in variants and "CIRCLE" in variants


def test_misspellings_that_the_tokenizer_reads_as_the_name_are_dropped():
    def lower_case_ids(text: str) -> tuple[int, ...]:  # a CLIP-like tokenizer lower-cases
        return tuple(ord(ch) for ch in text.lower())

    prompts = ap.misspelling_prompts("circle", ["a photo of a circle"], [], lower_case_ids, limit=100)
    assert "a photo of a CIRCLE" not in prompts
    assert "a photo of a circles" in prompts
    assert len({lower_case_ids(p) for p in prompts}) == len(prompts)
    assert len(ap.misspelling_prompts("circle", ["a photo of a circle"], [], lower_case_ids, limit=2)) == 2


def test_a_paraphrase_that_names_the_concept_is_not_one():
    kept = ap.paraphrase_prompts(["a round disc", "a red circle", "  a   dot ", "a round disc", ""], "circle", 10)
    assert kept == ["a round disc", "a dot"]
    assert ap.paraphrase_prompts(["john doe smiling", "a man"], "john doe", 10) == ["a man"]


def test_paraphrase_file_comments_are_skipped():
    assert ap.without_comments(["# mine", "a round disc", "  # indented comment", "a dot"]) == ["a round disc", "a dot"]
