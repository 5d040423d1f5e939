"""Vectorised Zhang-Suen thinning, used to measure MNIST stroke width."""

from __future__ import annotations

import numpy as np


def skeletonize(ink: np.ndarray) -> np.ndarray:
    """Thin a batch of binary images [N, H, W] to one-pixel skeletons (Zhang & Suen, 1984)."""
    img = np.pad(ink.astype(np.uint8), ((0, 0), (1, 1), (1, 1)))
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            p = img
            # Neighbours P2..P9, clockwise from north.
            nb = [
                p[:, :-2, 1:-1],
                p[:, :-2, 2:],
                p[:, 1:-1, 2:],
                p[:, 2:, 2:],
                p[:, 2:, 1:-1],
                p[:, 2:, :-2],
                p[:, 1:-1, :-2],
                p[:, :-2, :-2],
            ]
            b = sum(n.astype(np.int32) for n in nb)
            a = sum(((nb[i] == 0) & (nb[(i + 1) % 8] == 1)).astype(np.int32) for i in range(8))
            p2, p4, p6, p8 = nb[0], nb[2], nb[4], nb[6]
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (p[:, 1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & cond
            if remove.any():
                img[:, 1:-1, 1:-1][remove] = 0
                changed = True
    return img[:, 1:-1, 1:-1].astype(bool)


def stroke_width(gray: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Mean stroke width of [N, H, W] images in [0, 1]: ink area / skeleton length."""
    ink = gray > level
    skel = skeletonize(ink)
    area = ink.reshape(len(ink), -1).sum(1)
    length = np.maximum(skel.reshape(len(skel), -1).sum(1), 1)
    return area / length
