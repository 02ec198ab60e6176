"""Classifier judges: one small CNN per category, saved as safetensors with its labels.

The testbed's judges are of this kind; any folder of `{category}.safetensors` files in the
same format serves as a bench's "classifier" judge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from patchkit.core.pixels import to_tensor
from patchkit.errors import InputError

NONE_LABEL = "none"
REBUILD_HINT = "give a folder with one {category}.safetensors judge per category (patchkit testbed build makes them)"
DEFAULT_IMAGE_SIZE = 32  # the side the nets were trained at, unless a file's metadata says otherwise


class JudgeNet(nn.Module):
    """Classifies a 32 px RGB image in [-1, 1] into one of `num_classes` labels."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(24, 48, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(48, 96, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Linear(96, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(images).flatten(1))
        return logits


@dataclass(frozen=True)
class Judge:
    """A trained classifier plus the names of its classes (the last one is "none")."""

    category: str
    labels: tuple[str, ...]
    net: JudgeNet
    image_size: int = DEFAULT_IMAGE_SIZE

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> list[str]:
        self.net.eval()
        return [self.labels[i] for i in self.net(images).argmax(dim=1).tolist()]


def save_judge(judge: Judge, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in judge.net.state_dict().items()}
    metadata = {"labels": json.dumps(judge.labels), "image_size": str(judge.image_size)}
    save_file(tensors, str(folder / f"{judge.category}.safetensors"), metadata=metadata)


def load_judge(folder: Path, category: str) -> Judge:
    path = folder / f"{category}.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    labels = tuple(json.loads(metadata["labels"]))
    net = JudgeNet(len(labels))
    net.load_state_dict(load_file(str(path)))
    return Judge(category, labels, net, int(metadata.get("image_size", DEFAULT_IMAGE_SIZE)))


@dataclass(frozen=True)
class ClassifierPanel:
    """One classifier judge per category: PIL images in, one verdict per category out."""

    judges: dict[str, Judge]

    @classmethod
    def load(cls, folder: Path, categories: Sequence[str]) -> ClassifierPanel:
        missing = [c for c in categories if not (folder / f"{c}.safetensors").is_file()]
        if missing:
            raise InputError(f"{folder} lacks the judge(s) {', '.join(missing)}", hint=REBUILD_HINT)
        return cls({c: load_judge(folder, c) for c in categories})

    def classify(self, category: str, images: Sequence[Image.Image]) -> list[str]:
        judge = self.judges[category]
        return judge.classify(to_tensor(images, judge.image_size))

    def verdicts(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        by_category = {c: self.classify(c, images) for c in self.judges}
        return [{c: by_category[c][i] for c in self.judges} for i in range(len(images))]
