"""Judges, pluggable by name: each reads images and names one concept of a category, or "none".

- classifier: trained per-category classifiers (the testbed's, or any folder holding
  `{category}.safetensors` in the same format);
- clip: zero-shot over the category's concept names plus "none", with any local CLIP
  model in transformers format, optionally blended with similarity to reference images;
- nudenet: the optional NSFW detector, when the `nudenet` package is installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from patchkit.core.conceptbench import JudgeSpec
from patchkit.errors import InputError, UsageError

NONE = "none"
JUDGE_NAMES = ("classifier", "clip", "nudenet")


class Judge(Protocol):
    def classify(self, images: Sequence[Image.Image]) -> list[str]: ...


class ClassifierJudge:
    """A category's trained classifier; its labels are concept names plus "none"."""

    def __init__(self, folder: Path, category: str, concepts: Sequence[str]) -> None:
        from patchkit.evaluation.classifier_net import load_judge

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
        from patchkit.core.pixels import to_tensor

        return self._judge.classify(to_tensor(images, self._judge.image_size))


def load_judge(
    spec: JudgeSpec,
    category: str,
    concepts: Sequence[str],
    *,
    base_dir: Path,
    references: dict[str, list[Image.Image]] | None = None,
    named: Mapping[str, Path] | None = None,
) -> Judge:
    """The bench's judge for one category. A classifier's `path` is a folder relative to the
    bench, or the name of a world whose judges patchkit ships (`named`, e.g. the testbed's)."""
    if spec.name == "classifier":
        named = named or {}
        if spec.path is None and len(named) != 1:
            raise UsageError(
                f"the {category} classifier judge needs a path",
                hint='"judges": {"object": {"name": "classifier", "path": "DIR"}}',
            )
        key = spec.path if spec.path is not None else next(iter(named))
        folder = named[key] if key in named else base_dir / key
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
