"""Saving images atomically."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from patchkit.io.atomic import atomic_path
from patchkit.io.regular import not_a_file


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# a 4k RGBA PNG is ~30 MB uncompressed-worst; a bigger file is not a reference image
MAX_IMAGE_BYTES = 64 << 20


def load_image_folder(folder: Path) -> list[Image.Image]:
    """Every image in `folder`, sorted by name, as RGB; anything else in it is an error, not skipped."""
    from patchkit.errors import InputError

    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of images", hint="give a folder of .png/.jpg/.webp images")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder} is empty", hint="put 4-16 images of the concept in it")
    strays = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if strays:
        raise InputError(
            f"{folder} holds files that are not images: {', '.join(strays[:3])}",
            hint=f"keep only {', '.join(IMAGE_SUFFIXES)} files there",
        )
    images = []
    for path in files:
        reason = not_a_file(path)  # a FIFO named x.png would block Image.open forever
        if reason is not None:
            raise InputError(f"{path} {reason}", hint="keep only image files in the folder")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InputError(f"{path} is {size:,} bytes, over the {MAX_IMAGE_BYTES:,} an image may be",
                             hint="downscale it: a reference needs no more than the model's resolution")  # fmt: skip
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(
                f"{path} is not a readable image ({exc.__class__.__name__})", hint="remove or replace it"
            ) from exc
    return images
