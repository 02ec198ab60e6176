"""Neighbour search: the word index answers what the pairwise rules say, for every concept of a run."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from patchkit.backend import neighbours
from patchkit.backend.neighbours import WordIndex, nearest_words
from patchkit.backend.text_side import load_text_side
from patchkit.models import refs, weights


def _words(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return sorted({"".join(rng.choice("abcdeor") for _ in range(rng.randint(3, 7))) for _ in range(count)})


@pytest.mark.parametrize("own", ["a", "ab", "abc", "abcd", "abcde", "circle", "ore", "oreo", "dab", "deco"])
def test_stem_lookup_agrees_with_the_pairwise_rule(own):
    words = _words(3000, 0)
    index = WordIndex.__new__(WordIndex)
    index._words = words
    index._by_prefix = {}
    for j, word in enumerate(words):
        for size in range(1, min(neighbours.SAME_STEM, len(word)) + 1):
            index._by_prefix.setdefault(word[:size], []).append(j)
    assert index._same_stem(own) == {j for j, w in enumerate(words) if neighbours._same_stem(w, own)}


class _Tokenizer:
    """A whole-word tokenizer over a fixed vocabulary (ids in order)."""

    def __init__(self, words: list[str]) -> None:
        self.vocab = {w + neighbours.END_OF_WORD: i for i, w in enumerate(words)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def __call__(self, text: str, add_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=[self.vocab[w + neighbours.END_OF_WORD] for w in text.split()])


def _reference(pipe, phrase: str, k: int, exclude: set[str]) -> list[str]:
    """The search as first written: candidates filtered per query, centred on their own mean."""
    table = pipe.text_encoder.get_input_embeddings().weight.float()
    own = phrase.split()
    found = [(i, t[: -len(neighbours.END_OF_WORD)]) for t, i in pipe.tokenizer.get_vocab().items()]
    found = sorted((i, w) for i, w in found if w not in exclude and not any(neighbours._same_stem(w, o) for o in own))
    rows = table[[i for i, _ in found]]
    centre = rows.mean(0, keepdim=True)
    query = table[pipe.tokenizer(phrase).input_ids].mean(0, keepdim=True)
    similarity = torch.nn.functional.cosine_similarity(rows - centre, query - centre).tolist()
    order = sorted(range(len(found)), key=lambda j: (-similarity[j], found[j][0]))
    return [found[j][1] for j in order[:k]]


def test_one_index_answers_every_concept_as_a_fresh_search_would():
    words = [w for w in _words(400, 1) if w not in neighbours.STOPWORDS]
    table = torch.randn(len(words), 16, generator=torch.Generator().manual_seed(0))
    embeddings = SimpleNamespace(weight=table)
    pipe = SimpleNamespace(tokenizer=_Tokenizer(words),
                           text_encoder=SimpleNamespace(get_input_embeddings=lambda: embeddings))  # fmt: skip
    exclude = {words[0], words[1]}
    index = WordIndex(pipe, exclude)
    for phrase in (words[5], words[40], f"{words[7]} {words[90]}"):
        assert (
            index.nearest(phrase, 16)
            == _reference(pipe, phrase, 16, exclude)
            == nearest_words(pipe, phrase, 16, exclude)
        )


def test_testbed_neighbours_of_circle_leave_out_the_concept_and_its_stems():
    ref = refs.resolve("testbed")
    configs = weights.configs_of(ref.config_folder)
    text = load_text_side(ref.config_folder, configs, weights.model_spans(ref, configs))
    found = WordIndex(text, {"circle"}).nearest("circle", 16)
    assert found and "circle" not in found and len(found) == len(set(found))
