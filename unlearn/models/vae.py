"""A convolutional VAE for 32x32 images; its decoder is the generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 16
    channels: int = 1
    width: int = 32  # channels of the first conv; doubles per stage
    resolution: int = 32
    kind: str = "vae"


class VAEDecoder(nn.Module):
    """Generator contract: z [N, z_dim] float32 -> image [N, C, 32, 32] in [-1, 1]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        assert cfg.resolution == 32, "only 32x32 is supported"
        self.cfg, self.z_dim = cfg, cfg.z_dim
        w = cfg.width
        self.fc = nn.Linear(cfg.z_dim, 4 * w * 4 * 4)
        # BatchNorm: without it the decoder sits on the mean image for hundreds of steps
        # (measured); in eval mode it folds into the convolutions at export.
        self.net = nn.Sequential(
            nn.BatchNorm2d(4 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.BatchNorm2d(w),
            nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1),
            nn.Tanh(),  # 32x32
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        h = self.fc(z).view(z.shape[0], 4 * self.cfg.width, 4, 4)
        return self.net(h)


class VAEEncoder(nn.Module):
    """x [N, C, 32, 32] -> (mu, logvar), each [N, z_dim]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        w = cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1),
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(4 * w * 16, 2 * cfg.z_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.encoder, self.decoder = VAEEncoder(cfg), VAEDecoder(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar
