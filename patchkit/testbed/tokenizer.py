"""A real CLIP BPE tokenizer whose vocabulary holds every testbed word as one token.

BPE applies the lowest-ranked merge first, so merges learnt for one word can split
another ("ri" from "ring" inside "triangle"). We add merges one at a time, each ranked
after all earlier ones, and re-check every word: a new highest-ranked merge can never
change a path that already ended in a single token.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet, so that any text still tokenizes.
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(symbols) > 1:
        pairs = [(ranks.get(pair), i) for i, pair in enumerate(itertools.pairwise(symbols))]
        ranked = [(r, i) for r, i in pairs if r is not None]
        if not ranked:
            break
        _, i = min(ranked)
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def _word_symbols(word: str) -> list[str]:
    return [*word[:-1], word[-1] + END_OF_WORD]


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """Vocabulary and merge list under which each of `words` is a single token."""
    alphabet = list(_bytes_to_unicode().values())
    tokens: list[str] = [*alphabet, *(c + END_OF_WORD for c in alphabet)]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    changed = True
    while changed:
        changed = False
        for word in words:
            symbols = _apply_merges(_word_symbols(word), ranks)
            while len(symbols) > 1:
                pair = (symbols[0], symbols[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
                symbols = _apply_merges(_word_symbols(word), ranks)
                changed = True
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, [f"{a} {b}" for a, b in merges]


def write_tokenizer_files(words: list[str], folder: Path, max_length: int) -> None:
    """Write vocab.json, merges.txt and the configs of a CLIPTokenizer into `folder`."""
    vocab, merges = build_vocab(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0, sort_keys=True))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True))
