"""The words a model's own text encoder places nearest a concept: the neighbours to hold in place.

Forgetting moves the cross-attention keys and values of the concept's token embeddings,
and the embeddings nearest them move with them, so those are the words most at risk
(this is what the measured collateral of issue 17 showed: `square` took `triangle`
down by 0.50 when nothing held it). The search runs over the input embedding table,
which costs one matrix product for any vocabulary (49,408 words in SD's CLIP), with
cosines taken about the candidates' mean (token embeddings share one dominant direction).
On a large encoder the nearest words are related words; on the two tiny testbed encoders
they are close to arbitrary (measured: "circle" -> carl, neon, bella), which is why a
forget holds 16 of them: on a small vocabulary that is most of its words.

Left out: sub-word pieces (a word must end a BPE word, `</w>`, and be alphabetic), short
words and stopwords, the concept's own words, and near-synonyms by spelling: a word
sharing its first four letters or more with a concept word (circle, circles, circular).
Synonyms that are spelt differently ("round" for "circle") cannot be told from
neighbours by the embedding alone and may be held; that weakens a forget only on
prompts that avoid the concept's name, which issue 18's attacks measure.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch.nn.functional as F

from patchkit.core.retain_set import STOPWORDS

END_OF_WORD = "</w>"
MIN_LETTERS = 3
SAME_STEM = 4  # a shared prefix this long (or the whole shorter word) means the same word


def _same_stem(word: str, other: str) -> bool:
    shared = 0
    for a, b in zip(word, other, strict=False):
        if a != b:
            break
        shared += 1
    return shared >= min(SAME_STEM, len(word), len(other))


class WordIndex:
    """The model's whole words and their input embeddings, gathered once and asked once per concept
    (a 100-concept forget widened SD's 49,408 x 768 table a hundred times: 3 s)."""

    def __init__(self, pipe: Any, exclude: Collection[str] = ()) -> None:
        self._tokenizer = pipe.tokenizer
        self._table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
        banned = {w.lower() for w in exclude}
        candidates: list[tuple[int, str]] = []
        for token, index in self._tokenizer.get_vocab().items():
            if not token.endswith(END_OF_WORD):
                continue
            word = token[: -len(END_OF_WORD)]
            if len(word) < MIN_LETTERS or not (word.isascii() and word.isalpha()) or word in STOPWORDS:
                continue
            if word in banned or index >= self._table.shape[0]:
                continue
            candidates.append((index, word))
        candidates.sort()
        self._words = [word for _, word in candidates]
        self._rows = self._table[[i for i, _ in candidates]] if candidates else self._table[:0]
        self._total = self._rows.sum(0, keepdim=True)
        self._by_prefix: dict[str, list[int]] = {}  # each word under its prefixes of 1..SAME_STEM letters
        for j, word in enumerate(self._words):
            for size in range(1, min(SAME_STEM, len(word)) + 1):
                self._by_prefix.setdefault(word[:size], []).append(j)

    def _same_stem(self, own: str) -> set[int]:
        """The candidates that share a stem with `own` (what _same_stem says, by look-up)."""
        size = min(SAME_STEM, len(own))
        found = set(self._by_prefix.get(own[:size], []))  # words at least `size` long with its first letters
        # shorter words than that count when the whole word starts `own`
        found.update(j for n in range(MIN_LETTERS, size) for j in self._by_prefix.get(own[:n], [])
                     if len(self._words[j]) == n)  # fmt: skip
        return found

    def nearest(self, phrase: str, k: int) -> list[str]:
        """Up to `k` whole words nearest `phrase` by cosine over the input embeddings (module docstring).

        Ties break by token id, so the answer is deterministic. A tokenizer without CLIP's
        `</w>` word ends yields no candidates, and an empty list.
        """
        ids = self._tokenizer(phrase, add_special_tokens=False).input_ids
        own = [w.lower() for w in phrase.split()]
        stems = set().union(*(self._same_stem(w) for w in own))
        dropped = sorted(stems)
        kept = [j for j in range(len(self._words)) if j not in stems]
        if not ids or not kept:
            return []
        query = self._table[ids].mean(0, keepdim=True)
        # Token embeddings share a common direction (every cosine near 1 on small encoders);
        # measuring from the candidates' mean leaves what tells the words apart.
        centre = (self._total - self._rows[dropped].sum(0, keepdim=True)) / len(kept)
        rows = self._rows[kept]
        similarity = F.cosine_similarity(rows - centre, query - centre)
        scores = similarity.tolist()
        order = sorted(range(len(kept)), key=lambda j: (-scores[j], j))
        return [self._words[kept[j]] for j in order[:k]]


def nearest_words(pipe: Any, phrase: str, k: int, exclude: Collection[str] = ()) -> list[str]:
    """Up to `k` whole words nearest `phrase` (WordIndex.nearest), `exclude` and the phrase's own stems left out."""
    return WordIndex(pipe, exclude).nearest(phrase, k)
