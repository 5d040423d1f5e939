"""Image helpers: [-1, 1] tensors to uint8, PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from feature_unlearn.unlearn.io import atomic_write


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> [N, H, W, C] uint8 (round((x + 1) * 127.5), clipped)."""
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile [N, C, H, W] images in [-1, 1] into one [H', W', 3] uint8 array."""
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    img = to_uint8(x).numpy()
    if c == 1:
        img = np.repeat(img, 3, axis=3)
    out = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img[i]
    return out


def save_png(array: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    from PIL import Image

    im = Image.fromarray(array)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return atomic_write(path, lambda p: im.save(p, format="PNG"))


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    return save_png(grid(x, nrow), path, scale)
