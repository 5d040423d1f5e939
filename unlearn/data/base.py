"""The image-set container every dataset returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# An image whose score lies this close under its threshold (in units of ambiguity: 0.2 px of MNIST stroke
# width) is left out of the data "without" the feature too. The oracle of a thresholded feature trained on
# everything under the threshold drew 1.9-4.2% of its digits over it and the auditor read 1.8-2.3% as thick;
# the band keeps the oracle (and evaluation's reference set) clear of the label's own noise at the line.
EXCLUSION_BAND = 0.2 / 0.15  # 0.2 px / mnist.THICK_SOFTNESS; a test holds the two together


@dataclass(frozen=True)
class ImageSet:
    """Images in [-1, 1] with per-image attribute labels.

    images: [N, C, H, W] float32.  attrs[name]: [N] int64; ``classes[name]`` is 2 for a
    binary attribute (0/1), K for a K-way categorical one. ``scores[name]`` ([N] float32, optional)
    is the signed margin behind a thresholded binary attribute (attrs == (score >= 0)), in units of
    its ambiguity: classifiers learn it as a soft target, which tells them how close to the
    threshold an image lies (MNIST "thick" is the top 10% of a continuous stroke width).
    """

    name: str
    images: torch.Tensor
    attrs: dict[str, torch.Tensor]
    classes: dict[str, int]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.images.ndim == 4, f"images must be [N,C,H,W], got {tuple(self.images.shape)}"
        n = self.images.shape[0]
        for k, v in self.attrs.items():
            assert v.shape == (n,), f"attribute {k}: expected shape ({n},), got {tuple(v.shape)}"
            assert k in self.classes, f"attribute {k} has no class count"
        for k, v in self.scores.items():
            assert self.classes.get(k) == 2 and v.shape == (n,), f"score {k}: needs a binary attribute and shape ({n},)"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def binary_attrs(self) -> list[str]:
        return [k for k, c in self.classes.items() if c == 2]

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(
            self.name,
            self.images[index],
            {k: v[index] for k, v in self.attrs.items()},
            dict(self.classes),
            {k: v[index] for k, v in self.scores.items()},
        )

    def split(self, holdout: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A fixed random (train, held-out) split."""
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=gen)
        n_test = int(round(len(self) * holdout))
        return self.subset(perm[n_test:]), self.subset(perm[:n_test])

    def without(self, feature: str) -> ImageSet:
        """The images that do not show a binary ``feature`` (an oracle's training data).

        A thresholded feature (one with a score) also loses the images within ``EXCLUSION_BAND`` under it.
        """
        if self.classes.get(feature) != 2:
            raise KeyError(feature)
        keep = self.attrs[feature] == 0
        if feature in self.scores:
            keep &= self.scores[feature] < -EXCLUSION_BAND
        return self.subset(torch.nonzero(keep).flatten())

    def rates(self) -> dict[str, float]:
        """Share of images showing each binary attribute."""
        return {k: float(self.attrs[k].float().mean()) for k in self.binary_attrs}
