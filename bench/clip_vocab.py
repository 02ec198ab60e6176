"""Does patchkit's single-token check keep the generic phrasings on SD's real CLIP vocabulary?

Run: .venv/bin/python bench/clip_vocab.py [--wheel-dir DIR]

`--every-template` adds the other categories' phrasings only in words the model's tokenizer
reads as one token each (`in_own_words`, patchkit/training/fit.py). On the two testbed
worlds that drops most of them; on SD's CLIP vocabulary (49,408 tokens) it should drop none.
No Hub here, so this builds the vocabulary from the CLIP BPE merges that the
open_clip_torch wheel ships (`bpe_simple_vocab_16e6.txt.gz`, MIT, the file OpenAI's CLIP
tokenizer reads), fetched from the package index with `pip download`, never installed.
The build is checked against token ids SD 1.x's tokenizer is known to give
("a photo of a circle" -> 49406 320 1125 539 320 7117 49407) before anything is judged.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer

from patchkit.core.world import GENERIC_TEMPLATES
from patchkit.training.fit import in_own_words
from patchkit.training.prompts import Concept, TrainingPrompt

WHEEL = "open_clip_torch==3.3.0"
MERGES_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
KNOWN = ("a photo of a circle", [49406, 320, 1125, 539, 320, 7117, 49407])


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """SD's CLIP tokenizer, from the BPE merges in the open_clip wheel under `folder`."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), WHEEL], check=True)
    wheel = next(folder.glob("open_clip_torch-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        lines = gzip.decompress(archive.read(MERGES_MEMBER)).decode("utf-8").split("\n")
    # CLIP's layout: the first line is a header, then 49,152 - 256 - 2 merges are used
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(importlib.import_module("transformers.convert_slow_tokenizer").bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # the tokenizers backend takes the merges as pairs, though transformers annotates them as strings
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)  # type: ignore[arg-type]
    tokenizer.model_max_length = 77
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-dir", type=Path, default=None, help="where to keep the downloaded wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = clip_tokenizer(args.wheel_dir or Path(scratch))
    text, expected = KNOWN
    got = tokenizer(text).input_ids
    if got != expected:
        sys.exit(f"the rebuilt vocabulary is not SD's: {text!r} -> {got}, expected {expected}")
    print(f"vocabulary: {len(tokenizer)} tokens; {text!r} -> {got}, as SD 1.x's tokenizer gives")
    concept = Concept("circle", "object")
    print("| category | phrasing | kept by in_own_words |")
    print("|---|---|---|")
    kept_count = total = 0
    for category, templates in GENERIC_TEMPLATES.items():
        for template in templates:
            item = TrainingPrompt(0, template.format(concept.name), template.replace("{}", "").strip(), quiet=True)
            kept = bool(in_own_words(tokenizer, [item], [concept]))
            kept_count += kept
            total += 1
            print(f"| {category} | {template} | {'yes' if kept else '**no**'} |")
    print(f"kept {kept_count} of {total}")


if __name__ == "__main__":
    main()
