"""Labelled image grids: the picture a person wants to see, composed without touching disk."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_LINE = 11


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def labelled_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    *,
    title: str = "",
    columns: int = 8,
    cell: int = 128,
) -> Image.Image:
    """Images upscaled to `cell` px (nearest, so pixels stay honest) with a caption under each."""
    if len(images) != len(captions):
        raise ValueError("one caption per image")
    if not images:
        raise ValueError("no images to lay out")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    caption_lines = max(c.count("\n") + 1 for c in captions)
    cell_h = cell + caption_lines * _LINE + _PAD
    title_h = (_LINE + 2 * _PAD) if title else 0
    width = columns * (cell + _PAD) + _PAD
    grid = Image.new("RGB", (width, title_h + rows * (cell_h + _PAD) + _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font()
    if title:
        draw.text((_PAD, _PAD), title, fill=(0, 0, 0), font=font)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = _PAD + (i % columns) * (cell + _PAD)
        y = title_h + _PAD + (i // columns) * (cell_h + _PAD)
        grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        draw.multiline_text((x, y + cell + 2), caption, fill=(40, 40, 40), font=font, spacing=1)
    return grid


def stack_vertically(parts: Sequence[Image.Image]) -> Image.Image:
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for part in parts:
        out.paste(part, (0, y))
        y += part.height
    return out
