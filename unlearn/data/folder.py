"""A user's own image folder, with an optional attributes CSV.

CSV format: a header ``filename,<attr1>,<attr2>,...`` and one row per image with integer
labels (0/1 for binary attributes, 0..K-1 for categorical ones).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _read_image(path: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if size is not None and arr.shape[:2] != size:
        raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, expected {size[1]}x{size[0]} like the others")
    return arr if arr.ndim == 3 else arr[:, :, None]


def _read_attributes(csv_path: Path, names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"--attributes {csv_path}: cannot read ({exc})") from None
    if not rows or "filename" not in rows[0]:
        raise DataError(f"--attributes {csv_path}: needs a header starting with 'filename'")
    by_name = {r["filename"]: r for r in rows}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"--attributes {csv_path}: no row for {missing[0]} ({len(missing)} images missing)")
    attrs: dict[str, torch.Tensor] = {}
    for col in [c for c in rows[0] if c != "filename"]:
        try:
            attrs[col] = torch.tensor([int(by_name[n][col]) for n in names], dtype=torch.int64)
        except (ValueError, TypeError):
            raise DataError(f"--attributes {csv_path}: column {col!r} must hold integers") from None
        if attrs[col].min() < 0:
            raise DataError(f"--attributes {csv_path}: column {col!r} has negative labels")
    return attrs, {k: max(2, int(v.max()) + 1) for k, v in attrs.items()}


def load_folder(root: str | Path, attributes: str | Path | None = None, grayscale: bool = False) -> ImageSet:
    """All images in ``root`` (sorted by name), which must share one size."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"--data {root}: no images ({', '.join(sorted(EXTENSIONS))})")
    mode = "L" if grayscale else "RGB"
    first = _read_image(files[0], None, mode)
    arrays = [first] + [_read_image(f, first.shape[:2], mode) for f in files[1:]]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) * 2.0 - 1.0
    attrs, classes = _read_attributes(Path(attributes), [f.name for f in files]) if attributes else ({}, {})
    return ImageSet(f"folder:{root.name}", images.contiguous(), attrs, classes)
