"""Which prompts a model can read whole: its tokenizer truncates at its context length.

A training prompt whose concept falls past the context teaches nothing (the concept's
tokens are not there to re-steer), so it is dropped with a warning; a prompt the user
wrote that does not fit is refused, because the user meant every word of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from patchkit.backend.protocols import Tokenizer
from patchkit.core.tokens import concept_positions
from patchkit.errors import UsageError
from patchkit.training.prompts import Concept, TrainingPrompt, without


def token_count(tokenizer: Tokenizer, prompt: str) -> int:
    """Tokens in `prompt` with the start and end tokens, before any truncation."""
    return len(tokenizer(prompt, truncation=False, verbose=False).input_ids)


def _reads_concept(tokenizer: Tokenizer, prompt: str, phrase: str) -> bool:
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return bool(concept_positions(ids, tokenizer(phrase, add_special_tokens=False).input_ids))


@dataclass(frozen=True)
class Readable:
    kept: list[TrainingPrompt]
    dropped: list[str]  # the prompts whose concept the model never reads


def readable_prompts(
    tokenizer: Tokenizer,
    items: Sequence[TrainingPrompt],
    concepts: Sequence[Concept],
    *,
    user_written: bool,
    warn: Callable[[str], None] | None = None,
) -> Readable:
    """The training prompts in which the model reads the concept; refuse when a concept has none left.

    `user_written` (--prompt): a template longer than the context is an error, not a drop.
    """
    limit = tokenizer.model_max_length
    if user_written:
        for item in items:
            if item.quiet:  # patchkit's own additions are dropped, never refused
                continue
            count = token_count(tokenizer, item.prompt)
            if count > limit:
                raise UsageError(
                    f'--prompt "{item.prompt}" is {count} tokens; this model reads {limit} (start and end included)',
                    hint="shorten the template so the whole prompt fits",
                )
    kept, dropped = [], []
    for item in items:
        phrase = concepts[item.concept].name
        if _reads_concept(tokenizer, item.prompt, phrase):
            kept.append(item)
            continue
        dropped.append(item.prompt)
        if warn and not item.quiet:
            warn(f'"{item.prompt}" loses "{phrase}" to truncation at {limit} tokens; not trained on')
    for index, concept in enumerate(concepts):
        # the phrasings added for it (quiet) do not count: a run in those alone would train a
        # concept in no phrasing of its own category
        if not any(item.concept == index and not item.quiet for item in kept):
            raise UsageError(
                f'no training prompt keeps "{concept.name}" within this model\'s {limit}-token context',
                hint='give prompts in the model\'s own phrasing: --prompt "a {}" --prompt "a photo of {}"',
            )
    return Readable(kept, dropped)


def _single_token(tokenizer: Tokenizer, word: str) -> bool:
    return len(tokenizer(word, add_special_tokens=False).input_ids) == 1


def in_own_words(
    tokenizer: Tokenizer, items: Sequence[TrainingPrompt], concepts: Sequence[Concept]
) -> list[TrainingPrompt]:
    """`items` without the phrasings patchkit added (quiet) that use words the model does not know.

    A word the model knows is one token in its vocabulary ("portrait" in SD's CLIP); a word it
    spells out in pieces ("p", "or", "tra", "it" in a small vocabulary) is noise in its context,
    not a phrasing. What the user gave and the concept's own name are never judged this way.
    """
    known: dict[str, bool] = {}

    def reads(word: str) -> bool:
        if word not in known:
            known[word] = _single_token(tokenizer, word)
        return known[word]

    kept = []
    for item in items:
        rest = without(item.prompt, concepts[item.concept].name)
        if item.quiet and not all(reads(word) for word in re.findall(r"[^\W\d_]+", rest)):
            continue
        kept.append(item)
    return kept


def check_retain_fits(tokenizer: Tokenizer, prompts: Sequence[str], what: str = "retain prompt") -> None:
    """A retain prompt the user gave must fit whole: the part past the context would not be held."""
    limit = tokenizer.model_max_length
    for prompt in prompts:
        count = token_count(tokenizer, prompt)
        if count > limit:
            raise UsageError(
                f'{what} "{prompt}" is {count} tokens; this model reads {limit} (start and end included)',
                hint="shorten it, or split it into prompts that fit",
            )
