"""Saving images atomically."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from patchkit.io.atomic import atomic_path


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
