"""What a synthetic world gives the testbed build: concepts, prompts and a ground-truth renderer.

The testbed (world A, `patchkit.testbed.world`) and the validation world (world B,
`patchkit.testbed.world_b`) are both modules that satisfy `SyntheticWorld`, so the same
build, bench and quality check serve either. World B exists to measure defaults that were
chosen on world A: it shares no concept word, no prompt phrasing and no visual with it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image


class Scene(Protocol):
    def label(self, category: str) -> str | None: ...


class SyntheticWorld(Protocol):
    @property
    def NAME(self) -> str: ...  # noqa: N802 - a module constant
    @property
    def CATEGORIES(self) -> tuple[str, ...]: ...  # noqa: N802
    @property
    def MAX_TOKENS(self) -> int: ...  # noqa: N802
    @property
    def IMAGE_SIZE(self) -> int: ...  # noqa: N802

    def concepts(self, category: str) -> tuple[str, ...]: ...
    def all_concepts(self) -> Sequence[tuple[str, str]]: ...
    def vocabulary_words(self) -> list[str]: ...
    def sample_training_pair(self, rng: random.Random) -> tuple[str, Scene]: ...
    def render(self, scene: Any, rng: random.Random) -> Image.Image: ...
    def judge_scene(self, category: str, rng: random.Random) -> Scene: ...
    def reference_scene(self, name: str, category: str, index: int) -> Scene: ...
    def bench_prompts(self, name: str, category: str) -> list[str]: ...
