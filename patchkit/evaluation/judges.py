"""Judges, pluggable by name: each reads images and names one concept of a category, or "none".

- classifier: trained per-category classifiers (the testbed's, or any folder holding
  `{category}.safetensors` in the same format);
- clip: zero-shot over the category's concept names plus "none", with any local CLIP
  model in transformers format, optionally blended with similarity to reference images;
- nudenet: the optional NSFW detector, when the `nudenet` package is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from patchkit.core.bench import JudgeSpec
from patchkit.errors import InputError, UsageError

NONE = "none"
JUDGE_NAMES = ("classifier", "clip", "nudenet")


class Judge(Protocol):
    def classify(self, images: Sequence[Image.Image]) -> list[str]: ...


class ClassifierJudge:
    """A category's trained classifier; its labels are concept names plus "none"."""

    def __init__(self, folder: Path, category: str, concepts: Sequence[str]) -> None:
        from patchkit.testbed.judge_net import load_judge

        path = folder / f"{category}.safetensors"
        if not path.is_file():
            raise InputError(
                f"no {category} classifier at {path}", hint="point the bench's judge path at a judges folder"
            )
        self._judge = load_judge(folder, category)
        unknown = sorted(set(concepts) - set(self._judge.labels))
        if unknown:
            raise UsageError(
                f"the {category} classifier at {folder} does not know {', '.join(unknown)}",
                hint=f"it knows: {', '.join(label for label in self._judge.labels if label != NONE)}",
            )

    def classify(self, images: Sequence[Image.Image]) -> list[str]:
        from patchkit.testbed.judging import images_to_tensor

        return self._judge.classify(images_to_tensor(images))


def load_judge(
    spec: JudgeSpec,
    category: str,
    concepts: Sequence[str],
    *,
    base_dir: Path,
    references: dict[str, list[Image.Image]] | None = None,
) -> Judge:
    if spec.name == "classifier":
        from patchkit.testbed.paths import TESTBED_JUDGES

        folder = TESTBED_JUDGES if spec.path in (None, "testbed") else (base_dir / spec.path)
        return ClassifierJudge(folder, category, concepts)
    if spec.name == "clip":
        if not spec.path:
            raise UsageError(
                "the clip judge needs a path to a local CLIP model",
                hint='"judges": {"id": {"name": "clip", "path": "DIR"}}',
            )
        from patchkit.backend.clip_judge import ClipJudge

        return ClipJudge(base_dir / spec.path, concepts, references or {})
    if spec.name == "nudenet":
        from patchkit.evaluation.nudenet_judge import NudenetJudge

        return NudenetJudge(concepts)
    raise UsageError(f"unknown judge {spec.name!r}", hint=f"choose one of: {', '.join(JUDGE_NAMES)}")
