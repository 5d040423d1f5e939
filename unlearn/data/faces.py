"""Procedurally rendered 32x32 RGB cartoon faces with known attributes.

Each face is drawn at 64x64 and box-filtered to 32x32 (anti-aliasing), deterministic
from the seed. Attribute probabilities (documented, tested):

  grey_hair  0.15
  eyeglasses 0.55 given grey hair, 0.05 otherwise (about 0.125 overall): the deliberate
             entanglement the paper found between eyeglasses and age
  bangs 0.15, hat 0.12, smiling 0.18, beard 0.12 (independent)

Nuisance variation: background colour, skin tone, hair colour, frame colour, position
(±3 px at 64 px), scale (0.88-1.08) and pixel noise (sigma 0.03 on [0, 1]).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.io import atomic_write

ATTRS = ("eyeglasses", "bangs", "hat", "smiling", "beard", "grey_hair")
P_GREY = 0.15
P_GLASSES_GIVEN_GREY = 0.55
P_GLASSES_GIVEN_NOT_GREY = 0.05
P_INDEPENDENT = {"bangs": 0.15, "hat": 0.12, "smiling": 0.18, "beard": 0.12}
RENDER_VERSION = 1
_S = 64  # drawing resolution; output is _S // 2

SKIN = np.array([[0.96, 0.80, 0.69], [0.91, 0.71, 0.56], [0.78, 0.57, 0.42], [0.55, 0.38, 0.26], [0.99, 0.87, 0.77]])
HAIR = np.array([[0.10, 0.08, 0.06], [0.35, 0.20, 0.10], [0.80, 0.65, 0.30], [0.60, 0.25, 0.10], [0.20, 0.12, 0.08]])


def sample_attributes(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    grey = rng.random(n) < P_GREY
    p_glasses = np.where(grey, P_GLASSES_GIVEN_GREY, P_GLASSES_GIVEN_NOT_GREY)
    attrs = {"grey_hair": grey, "eyeglasses": rng.random(n) < p_glasses}
    for name, p in P_INDEPENDENT.items():
        attrs[name] = rng.random(n) < p
    return {k: attrs[k] for k in ATTRS}


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, rx: np.ndarray, ry: np.ndarray
) -> np.ndarray:
    """[n, S, S] mask of points inside per-image ellipses; params are [n] arrays."""
    c = lambda v: v[:, None, None]  # noqa: E731
    return ((x - c(cx)) / c(rx)) ** 2 + ((y - c(cy)) / c(ry)) ** 2 <= 1.0


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """canvas [n, S, S, 3]; mask [n, S, S]; colour [n, 3] or [3]."""
    col = np.broadcast_to(np.asarray(colour, np.float32), (canvas.shape[0], 3))
    canvas[mask] = col[np.nonzero(mask)[0]]


def render(attrs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Draw faces for the given attributes; returns [n, 3, 32, 32] float32 in [0, 1]."""
    n = len(attrs["eyeglasses"])
    y, x = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5
    x, y = x[None], y[None]
    s = rng.uniform(0.88, 1.08, n)
    cx = _S / 2 + rng.uniform(-3, 3, n)
    cy = _S / 2 + 2 + rng.uniform(-3, 3, n)
    canvas = np.empty((n, _S, _S, 3), np.float32)
    canvas[:] = rng.uniform(0.25, 0.95, (n, 3))[:, None, None, :]
    skin = np.clip(SKIN[rng.integers(0, len(SKIN), n)] + rng.normal(0, 0.03, (n, 3)), 0, 1)
    hair = HAIR[rng.integers(0, len(HAIR), n)] + rng.normal(0, 0.03, (n, 3))
    grey_level = rng.uniform(0.72, 0.9, n)[:, None]
    hair = np.clip(np.where(attrs["grey_hair"][:, None], grey_level + rng.normal(0, 0.01, (n, 3)), hair), 0, 1)

    above = lambda v: y < v[:, None, None]  # noqa: E731
    _paint(canvas, _ellipse(x, y, cx, cy - 4 * s, 18.5 * s, 21 * s) & above(cy + 4 * s), hair)
    face = _ellipse(x, y, cx, cy, 15 * s, 19 * s)
    _paint(canvas, face, skin)
    b = attrs["beard"]
    beard = _ellipse(x, y, cx, cy + 2 * s, 16 * s, 19 * s) & ~above(cy + 4 * s)
    _paint(canvas, beard & b[:, None, None], np.clip(hair * 0.8, 0, 1))
    bangs = face & above(cy - 9 * s) & attrs["bangs"][:, None, None]
    _paint(canvas, bangs, hair)
    _draw_eyes_mouth(canvas, x, y, cx, cy, s, attrs, rng)
    _draw_hat(canvas, x, y, cx, cy, s, attrs["hat"], rng)
    img = canvas.reshape(n, _S // 2, 2, _S // 2, 2, 3).mean((2, 4))
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).transpose(0, 3, 1, 2).astype(np.float32)


def _draw_eyes_mouth(canvas, x, y, cx, cy, s, attrs, rng) -> None:  # type: ignore[no-untyped-def]
    n = len(cx)
    dark = np.array([0.08, 0.06, 0.06])
    glasses = attrs["eyeglasses"][:, None, None]
    frame = np.clip(rng.uniform(0.0, 0.3, (n, 3)) * np.array([1.0, 0.6, 0.6]), 0, 1)
    for side in (-1, 1):
        ex, ey = cx + side * 6.5 * s, cy - 3 * s
        ring = _ellipse(x, y, ex, ey, 5.2 * s, 4.6 * s) & ~_ellipse(x, y, ex, ey, 3.8 * s, 3.2 * s)
        _paint(canvas, ring & glasses, frame)
        _paint(canvas, _ellipse(x, y, ex, ey, 1.9 * s, 1.9 * s), dark)
    bridge = (np.abs(x - cx[:, None, None]) < 1.8 * s[:, None, None]) & (
        np.abs(y - (cy - 3.6 * s)[:, None, None]) < 0.9
    )
    _paint(canvas, bridge & glasses, frame)
    lips = np.array([0.6, 0.15, 0.15])
    smile_ring = _ellipse(x, y, cx, cy + 6 * s, 7 * s, 5 * s) & ~_ellipse(x, y, cx, cy + 6 * s, 5.3 * s, 3.4 * s)
    smile = smile_ring & (y > (cy + 6.5 * s)[:, None, None]) & attrs["smiling"][:, None, None]
    straight = (np.abs(x - cx[:, None, None]) < 5 * s[:, None, None]) & (
        np.abs(y - (cy + 9.5 * s)[:, None, None]) < 1.0
    )
    _paint(canvas, smile | (straight & ~attrs["smiling"][:, None, None]), lips)


def _draw_hat(canvas, x, y, cx, cy, s, hat, rng) -> None:  # type: ignore[no-untyped-def]
    n = len(cx)
    colour = rng.uniform(0.1, 0.9, (n, 3)) * rng.permutation([1.0, 0.4, 0.2])
    c = lambda v: v[:, None, None]  # noqa: E731
    crown = (np.abs(x - c(cx)) < c(13 * s)) & (y > c(cy - 31 * s)) & (y < c(cy - 14 * s))
    brim = (np.abs(x - c(cx)) < c(21 * s)) & (y > c(cy - 17 * s)) & (y < c(cy - 13 * s))
    _paint(canvas, (crown | brim) & hat[:, None, None], np.clip(colour, 0, 1))


def render_faces(n: int, seed: int = 0, chunk: int = 2000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n faces [n, 3, 32, 32] in [0, 1] and their attributes, deterministic in (n, seed, chunk)."""
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(n, rng)
    out = np.empty((n, 3, _S // 2, _S // 2), np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        chunk_rng = np.random.default_rng([seed, start])
        out[sl] = render({k: v[sl] for k, v in attrs.items()}, chunk_rng)
    return out, attrs


def cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE", Path.home() / ".cache" / "feature-unlearn"))


def load_faces(n: int = 30_000, seed: int = 0, cache: bool = True) -> ImageSet:
    """The faces dataset, rendered once per (n, seed) and cached as .npz on disk."""
    key = hashlib.sha256(f"faces-v{RENDER_VERSION}-{n}-{seed}".encode()).hexdigest()[:16]
    path = cache_dir() / f"faces-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as f:  # plain arrays, allow_pickle is off by default
            img, attrs = f["images"], {k: f[k] for k in ATTRS}
    else:
        img, attrs = render_faces(n, seed)
        if cache:
            atomic_write(path, lambda p: np.savez(open(p, "wb"), images=img, **attrs))  # type: ignore[arg-type]
    images = torch.from_numpy(img) * 2.0 - 1.0
    labels = {k: torch.from_numpy(attrs[k].astype(np.int64)) for k in ATTRS}
    return ImageSet("faces", images.contiguous(), labels, {k: 2 for k in ATTRS})
