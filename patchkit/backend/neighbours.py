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


def nearest_words(pipe: Any, phrase: str, k: int, exclude: Collection[str] = ()) -> list[str]:
    """Up to `k` whole words nearest `phrase` by cosine over the text encoder's input embeddings.

    Ties break by token id, so the answer is deterministic. A tokenizer without CLIP's
    `</w>` word ends yields no candidates, and an empty list.
    """
    tokenizer = pipe.tokenizer
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    ids = tokenizer(phrase, add_special_tokens=False).input_ids
    if not ids:
        return []
    query = table[ids].mean(0, keepdim=True)
    own = [w.lower() for w in phrase.split()]
    banned = {w.lower() for w in exclude}
    candidates: list[tuple[int, str]] = []
    for token, index in tokenizer.get_vocab().items():
        if not token.endswith(END_OF_WORD):
            continue
        word = token[: -len(END_OF_WORD)]
        if len(word) < MIN_LETTERS or not (word.isascii() and word.isalpha()) or word in STOPWORDS:
            continue
        if word in banned or any(_same_stem(word, w) for w in own) or index >= table.shape[0]:
            continue
        candidates.append((index, word))
    if not candidates:
        return []
    candidates.sort()
    rows = table[[i for i, _ in candidates]]
    # Token embeddings share a common direction (every cosine near 1 on small encoders);
    # measuring from the candidates' mean leaves what tells the words apart.
    centre = rows.mean(0, keepdim=True)
    similarity = F.cosine_similarity(rows - centre, query - centre)
    order = sorted(range(len(candidates)), key=lambda j: (-float(similarity[j]), candidates[j][0]))
    return [candidates[j][1] for j in order[:k]]
