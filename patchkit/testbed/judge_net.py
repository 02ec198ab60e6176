"""The testbed judges: one small CNN classifier per category, saved as safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

NONE_LABEL = "none"


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

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> list[str]:
        self.net.eval()
        return [self.labels[i] for i in self.net(images).argmax(dim=1).tolist()]


def save_judge(judge: Judge, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in judge.net.state_dict().items()}
    save_file(tensors, str(folder / f"{judge.category}.safetensors"), metadata={"labels": json.dumps(judge.labels)})


def load_judge(folder: Path, category: str) -> Judge:
    path = folder / f"{category}.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        labels = tuple(json.loads(handle.metadata()["labels"]))
    net = JudgeNet(len(labels))
    net.load_state_dict(load_file(str(path)))
    return Judge(category, labels, net)
