"""The testbed's judges as one object: PIL images in, one verdict per category out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from patchkit.core.pixels import to_tensor
from patchkit.errors import InputError
from patchkit.testbed import world
from patchkit.testbed.judge_net import Judge, load_judge
from patchkit.testbed.paths import TESTBED_JUDGES


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    return to_tensor(images, world.IMAGE_SIZE)


@dataclass(frozen=True)
class JudgePanel:
    judges: dict[str, Judge]

    @classmethod
    def load(cls, folder: Path = TESTBED_JUDGES) -> JudgePanel:
        missing = [c for c in world.CATEGORIES if not (folder / f"{c}.safetensors").is_file()]
        if missing:
            raise InputError(
                f"{folder} lacks the judge(s) {', '.join(missing)}", hint="rebuild with: patchkit testbed build"
            )
        return cls({c: load_judge(folder, c) for c in world.CATEGORIES})

    def classify(self, category: str, images: Sequence[Image.Image]) -> list[str]:
        return self.judges[category].classify(images_to_tensor(images))

    def verdicts(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        by_category = {c: self.classify(c, images) for c in world.CATEGORIES}
        return [{c: by_category[c][i] for c in world.CATEGORIES} for i in range(len(images))]
