"""DCGAN (Radford et al., 2016) generator and discriminator for 32x32 images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 32
    channels: int = 1
    ngf: int = 32
    ndf: int = 32
    resolution: int = 32
    kind: str = "dcgan"


class DCGANGenerator(nn.Module):
    """Generator contract: z [N, z_dim] float32 -> image [N, C, 32, 32] in [-1, 1]."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        assert cfg.resolution == 32, "only 32x32 is supported"
        self.cfg, self.z_dim = cfg, cfg.z_dim
        g = cfg.ngf
        self.net = nn.Sequential(
            nn.ConvTranspose2d(cfg.z_dim, 4 * g, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * g),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * g, 2 * g, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * g),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * g, g, 4, 2, 1, bias=False),
            nn.BatchNorm2d(g),
            nn.ReLU(True),
            nn.ConvTranspose2d(g, cfg.channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """x [N, C, 32, 32] -> logit [N]."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        d = cfg.ndf
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, d, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(d, 2 * d, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * d),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * d, 4 * d, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * d),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * d, 1, 4, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
