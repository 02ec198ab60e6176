"""The preservation patchkit ships: everyday captions that any text-to-image model should keep.

A forget with no `--retain` distils the frozen model on these (as AdvUnlearn and MACE
preserve general knowledge with a fixed caption set), on the concept's nearest words in
the model's own text encoder, and on the prompts of the other concepts its world knows.
The list is fixed, so that the same inputs give the same patch; it spans the categories
(people, objects and animals, places, art styles) and is short enough to fit the
smallest context a model is likely to have once truncated (truncation only drops words
from the end, which is what the model itself would read).
"""

from __future__ import annotations

GENERIC_RETAIN: tuple[str, ...] = (
    "a photo of a man",
    "a photo of a woman",
    "a portrait of a child",
    "an old man smiling",
    "a group of people",
    "a photo of a dog",
    "a photo of a cat",
    "a bird on a branch",
    "a horse in a field",
    "a red car",
    "a wooden chair",
    "a cup of coffee",
    "a bowl of fruit",
    "a clock on a wall",
    "a house",
    "a city street",
    "a mountain lake",
    "a beach at sunset",
    "a forest path",
    "a kitchen",
    "an oil painting",
    "a watercolor painting",
    "a pencil sketch",
    "a cartoon drawing",
    "a black and white photo",
    "a painting of flowers",
    "a blue square",
    "a yellow circle",
    "a green triangle",
    "a logo",
    "a photo",
    "a picture",
)

# Words a neighbour search never returns: they sit near everything and name nothing.
_STOPWORDS = "a an and the of in on at to for with by from as is are was be or not this that it its"
STOPWORDS: frozenset[str] = frozenset([*_STOPWORDS.split(), "into", "onto", "over", "under", "photo", "picture",
                                       "image", "style"])  # fmt: skip
