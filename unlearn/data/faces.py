"""Procedurally rendered RGB cartoon faces with known attributes, 32x32 by default.

Each face is drawn at 64x64 and box-filtered to 32x32 (anti-aliasing), deterministic
from the seed. ``resolution=64`` keeps the 64x64 drawing as it is; 128 and 256 draw the same
scene on a finer grid (geometry in units of the 64-pixel drawing). Attribute probabilities
(documented, tested):

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
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.io import atomic_write

ATTRS = ("eyeglasses", "bangs", "hat", "smiling", "beard", "grey_hair")
P_GREY = 0.15
P_GLASSES_GIVEN_GREY = 0.55
P_GLASSES_GIVEN_NOT_GREY = 0.05
P_INDEPENDENT = {"bangs": 0.15, "hat": 0.12, "smiling": 0.18, "beard": 0.12}
RENDER_VERSION = 1
_S = 64  # the scene's units (and the drawing resolution at 32 and 64): positions and sizes below are in its pixels
RESOLUTIONS = (32, 64, 128, 256)

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


def _check_resolution(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution {resolution!r}: faces render at {', '.join(map(str, RESOLUTIONS))}")
    return resolution


def render(attrs: dict[str, np.ndarray], rng: np.random.Generator, resolution: int = 32) -> np.ndarray:
    """Draw faces for the given attributes; returns [n, 3, R, R] float32 in [0, 1], R = ``resolution``.

    At 32 the 64x64 drawing is box-filtered 2x2 (anti-aliasing); at 64 and above it is the output.
    """
    n, size = len(attrs["eyeglasses"]), max(_S, _check_resolution(resolution))
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) * np.float32(_S / size)
    x, y = x[None], y[None]
    s = rng.uniform(0.88, 1.08, n)
    cx = _S / 2 + rng.uniform(-3, 3, n)
    cy = _S / 2 + 2 + rng.uniform(-3, 3, n)
    canvas = np.empty((n, size, size, 3), np.float32)
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
    img = canvas.reshape(n, _S // 2, 2, _S // 2, 2, 3).mean((2, 4)) if resolution == 32 else canvas
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


def default_chunk(resolution: int) -> int:
    """Faces drawn at once: 2000 up to 64x64, fewer above (the same memory per chunk)."""
    return 2000 if resolution <= _S else 2000 * _S**2 // resolution**2


def _check_absent(absent: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [a for a in absent if a not in ATTRS]
    if unknown:
        raise ConfigError(f"faces: no attribute {unknown[0]!r} to draw absent (faces have {', '.join(ATTRS)})")
    return tuple(sorted(set(absent)))


def render_faces(
    n: int, seed: int = 0, chunk: int | None = None, resolution: int = 32, absent: tuple[str, ...] = ()
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """n faces [n, 3, R, R] in [0, 1] and their attributes, deterministic in (n, seed, chunk, resolution).

    The attributes depend on (n, seed) alone; at 32 and 64 (the same chunks) so does each scene.
    ``absent``: attributes drawn absent on every face. The renderer draws the same random numbers whatever
    the attributes, so these are the same faces without them (the counterfactual held-out set of a removal).
    """
    chunk = chunk or default_chunk(_check_resolution(resolution))
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(n, rng)
    for name in _check_absent(absent):
        attrs[name] = np.zeros(n, bool)
    out = np.empty((n, 3, resolution, resolution), np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        chunk_rng = np.random.default_rng([seed, start])
        out[sl] = render({k: v[sl] for k, v in attrs.items()}, chunk_rng, resolution)
    return out, attrs


def cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE", Path.home() / ".cache" / "feature-unlearn"))


def load_faces(
    n: int = 30_000, seed: int = 0, cache: bool = True, resolution: int = 32, absent: tuple[str, ...] = ()
) -> ImageSet:
    """The faces dataset at ``resolution`` (32, 64, 128 or 256), rendered once per (n, seed, resolution) and cached
    as .npz on disk (32x32 files keep their old name); ``absent``: the same faces without those attributes."""
    size = "" if _check_resolution(resolution) == 32 else f"-{resolution}px"
    without = "".join(f"-no-{a}" for a in _check_absent(absent))
    key = hashlib.sha256(f"faces-v{RENDER_VERSION}-{n}-{seed}{size}{without}".encode()).hexdigest()[:16]
    path = cache_dir() / f"faces-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as f:  # plain arrays, allow_pickle is off by default
            img, attrs = f["images"], {k: f[k] for k in ATTRS}
    else:
        img, attrs = render_faces(n, seed, resolution=resolution, absent=absent)
        if cache:
            atomic_write(path, lambda p: np.savez(open(p, "wb"), images=img, **attrs))  # type: ignore[arg-type]
    images = torch.from_numpy(img) * 2.0 - 1.0
    labels = {k: torch.from_numpy(attrs[k].astype(np.int64)) for k in ATTRS}
    return ImageSet("faces", images.contiguous(), labels, {k: 2 for k in ATTRS})
