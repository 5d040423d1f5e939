"""Factories for the bring-your-own tests (not a test module): most break the contract; ``bright`` is a detector."""

from __future__ import annotations

import torch
from torch import nn


class _Gen(nn.Module):
    def __init__(self, side: int = 32, scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim, self.side, self.scale = 4, side, scale
        self.lin = nn.Linear(4, side * side)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.lin(z)).view(len(z), 1, self.side, self.side)


def not_a_module() -> str:
    return "a generator"


def tiny_images() -> nn.Module:
    return _Gen(side=8)


def out_of_range() -> nn.Module:
    return _Gen(scale=3.0)


def no_z_dim() -> nn.Module:
    return nn.Linear(4, 4)


class _Detached(_Gen):
    """Images with no gradient path back to z (as a generator that renders without autograd would)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z).detach()


def detached() -> nn.Module:
    return _Detached()


def calibrated_dcgan(resolution: int = 64) -> nn.Module:
    """A random-initialised DCGAN of ours (z_dim 8, ngf 8, RGB), BatchNorm statistics from 256 prior draws."""
    from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator

    torch.manual_seed(resolution)
    g = DCGANGenerator(DCGANConfig(z_dim=8, channels=3, ngf=8, resolution=resolution))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        g.train()(torch.randn(256, 8))
    return g.eval()


class _Template(nn.Module):
    """Logit of "template": how much an image looks like what latent coordinate 0 draws in ``calibrated_dcgan``
    (its images' mean at z_0 > 1 less that at z_0 < -1), offset so that a tenth of its images are positive."""

    template: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        g, z = calibrated_dcgan(), torch.randn(4000, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            x = g(z)
        t = x[z[:, 0] > 1].mean(0) - x[z[:, 0] < -1].mean(0)
        self.register_buffer("template", t / t.norm())
        score = self.score(x)
        self.level, self.scale = float(score.quantile(0.9)), float(score.std()) / 4

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.template).flatten(1).sum(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"template": (self.score(x) - self.level) / self.scale}


def template() -> nn.Module:
    return _Template().eval()
