"""Zero-shot judging with any local CLIP model in transformers format.

Scores for each concept are the cosine similarity of the image to "a photo of {concept}",
averaged with its similarity to the concept's reference images when there are any; the
image goes to the best concept, or to "none" when the generic prompt scores higher.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from patchkit.errors import InputError

NONE_PROMPT = "a photo of something else"


class ClipJudge:
    def __init__(self, folder: Path, concepts: Sequence[str], references: dict[str, list[Image.Image]]) -> None:
        config = folder / "config.json"
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError):
            model_type = None
        if model_type != "clip":
            raise InputError(
                f"{folder} is not a CLIP model (config.json model_type is {model_type!r})",
                hint="give a folder saved by transformers' CLIPModel.save_pretrained, with its processor files",
            )
        self._model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
        self._processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        self._labels = [*concepts, "none"]
        with torch.no_grad():
            texts = [f"a photo of {c}" for c in concepts] + [NONE_PROMPT]
            tokens = self._processor(text=texts, return_tensors="pt", padding=True)
            self._text = _unit(self._model.get_text_features(**tokens))
            self._refs = {c: _unit(self._embed(imgs).mean(0, keepdim=True)) for c, imgs in references.items() if imgs}

    def _embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self._processor(images=list(images), return_tensors="pt")
        return _unit(self._model.get_image_features(**pixels))

    @torch.no_grad()
    def classify(self, images: Sequence[Image.Image]) -> list[str]:
        embedded = self._embed(images)
        scores = embedded @ self._text.T
        for i, label in enumerate(self._labels[:-1]):
            if label in self._refs:
                scores[:, i] = 0.5 * scores[:, i] + 0.5 * (embedded @ self._refs[label].T).squeeze(1)
        return [self._labels[i] for i in scores.argmax(dim=1).tolist()]


def _unit(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):  # transformers >= 5 may return an output object
        x = x.pooler_output
    unit: torch.Tensor = x / x.norm(dim=-1, keepdim=True)
    return unit
