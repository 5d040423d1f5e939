"""Measurements shared by pretraining and evaluation: sampling, attribute rates, FID."""

from __future__ import annotations

import torch
from torch import nn

from feature_unlearn.unlearn.models import AttributeClassifier


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """A fixed set of N(0, I) latents [n, z_dim] for a seed."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(g: nn.Module, z: torch.Tensor, batch: int = 512, out: int | None = None) -> torch.Tensor:
    """Images [N, C, H, W] in [-1, 1] for latents z [N, z_dim], batched, in eval mode.

    ``out`` picks one element when the module returns a tuple (a guarded generator).
    """
    g.eval()
    device = next(iter(g.parameters()), torch.empty(0)).device
    chunks = []
    for chunk in z.split(batch):
        x = g(chunk.to(device))
        chunks.append((x[out] if out is not None else x).float().cpu())
    return torch.cat(chunks)


def attribute_rates(classifier: AttributeClassifier, images: torch.Tensor) -> dict[str, float]:
    """Share of images showing each binary attribute; K-way ones as ``name=k`` shares."""
    pred = classifier.predict(images)
    rates: dict[str, float] = {}
    for k, y in pred.items():
        classes = classifier.cfg.heads[k]
        if classes == 2:
            rates[k] = float(y.float().mean())
        else:
            counts = torch.bincount(y, minlength=classes).float() / len(y)
            rates.update({f"{k}={i}": float(c) for i, c in enumerate(counts)})
    return rates


class AuditorFeatures(nn.Module):
    """The auditor's penultimate features, as torchmetrics' FID feature extractor."""

    def __init__(self, auditor: AttributeClassifier) -> None:
        super().__init__()
        self.auditor = auditor.eval()
        self.num_features = auditor.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.auditor.features(x)


@torch.no_grad()
def fid(auditor: AttributeClassifier, real: torch.Tensor, fake: torch.Tensor, batch: int = 512) -> float:
    """Fréchet distance between real and generated images in the auditor's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=AuditorFeatures(auditor), normalize=False)
    for chunk in real.split(batch):
        metric.update(chunk, real=True)
    for chunk in fake.split(batch):
        metric.update(chunk, real=False)
    return float(metric.compute())


def agreement(a: AttributeClassifier, b: AttributeClassifier, images: torch.Tensor) -> dict[str, float]:
    """Per binary attribute, the share of images on which two classifiers give the same label.

    On generated images this says whether a rate can be trusted: the labeller drives the fit and
    the auditor grades it, so an attribute they disagree on is graded on something the fit never saw.
    """
    pa, pb = a.predict(images), b.predict(images)
    shared = [k for k in pa if k in pb and a.cfg.heads[k] == 2 and b.cfg.heads.get(k) == 2]
    return {k: float((pa[k] == pb[k]).float().mean()) for k in shared}
