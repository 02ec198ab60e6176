"""PIL images to the [-1, 1] NCHW float tensors that VAEs and judges read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def to_tensor(images: Sequence[Image.Image], size: int | None = None) -> torch.Tensor:
    """Stack `images` (resized to `size` px square when given) into a (N, 3, H, W) tensor in [-1, 1]."""
    arrays = []
    for image in images:
        rgb = image.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
