"""World A's tuning split: where defaults are chosen (bench/tradeoff.py), and nothing is reported.

Never tune on what you measure. Two kinds of phrasing, both on seeds that neither a bench
nor a forget ever draws:

- *trained*: the phrasings a testbed forget trains and preserves with. They show
  collateral, and whether a concept is forgotten where the patch was trained;
- *transfer*: phrasings that no forget trains on, no bench scores, and neither attack/1
  nor `forget --robust` uses. They show whether forgetting carries to words the patch
  never saw: the failure a sweep over the trained phrasings alone cannot see (preservation
  10 won on them and forgot less on the bench, README "The trade-off").

tests/testbed/test_out_of_sample.py holds every set apart.
"""

from __future__ import annotations

# Phrasings the testbed's base model draws each concept from (8 images each, 2026-12-07:
# every concept 1.00), in words its tokenizer knows. No other phrasing shares one's words up
# to the concept: the text encoder is causal, so a shared prefix gives the concept's token
# the very same state, and "a painting of a {}" (attack/1's "a painting of a circle in the
# style of neon") or "a painting of {}" (--robust's) would be half-seen already.
TRANSFER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "id": ("portrait of {}", "the portrait of {}"),
    "object": ("a painting of the {}", "the painting of a {}"),
    "style": ("a photo in the style of {}", "a portrait in the style of {}"),
    "nsfw": ("portrait of {}", "the portrait of {}"),
}
TRAINED_SEED = 500_000  # the trained-phrasing split's first seed; concept k starts at + 1000 k
TRANSFER_SEED = 600_000  # the transfer split's
SEED_STRIDE = 1000


def transfer_prompts(name: str, category: str) -> list[str]:
    return [template.format(name) for template in TRANSFER_TEMPLATES[category]]


def split_seeds(first: int, concept_index: int, images: int) -> range:
    """The seeds one concept of a split draws: at most `SEED_STRIDE`, so concepts never share one."""
    if images > SEED_STRIDE:
        raise ValueError(f"a split draws at most {SEED_STRIDE} images per concept")
    start = first + SEED_STRIDE * concept_index
    return range(start, start + images)


# bench/robust_tuning.py's inversion probe (choosing `forget --robust`'s settings): the base
# draws the images it learns on from a concept's first transfer phrasing, the token is learnt
# and judged in the second; its seeds, like the split's, meet no bench's, forget's or attack's.
PROBE_IMAGE_SEED = 700_000
PROBE_JUDGE_SEED = 800_000


def probe_templates(category: str) -> tuple[str, str]:
    """(the phrasing the probe's images are drawn from, the phrasing its token is learnt and judged in)."""
    first, second = TRANSFER_TEMPLATES[category][:2]
    return first, second
