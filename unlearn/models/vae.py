"""A convolutional VAE for square images of 32, 64, 128 or 256 pixels; its decoder (with an optional learned prior)
is the generator.

With a sharp likelihood the aggregate posterior q(z) = E_x q(z|x) no longer fills N(0, I): prior
samples land in holes the decoder never saw (sigma 0.2 gave 35% eyeglasses against 12.6% in the
data). A small RealNVP flow u -> z fitted to q(z) closes the gap (the two-stage idea of Dai & Wipf,
"Diagnosing and enhancing VAE models", with a flow as the second stage); it is folded into the
generator, so the contract stays ``forward(u ~ N(0, I)) -> image``.

Resolutions above 32 add one stride-2 block per doubling, with the DCGAN's channel plan
(``dcgan.stage_widths``); at 32 the layers and their names are the zoo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from feature_unlearn.unlearn.models.dcgan import check_resolution, stage_widths


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 16
    channels: int = 1
    width: int = 32  # channels of the first conv; doubles per stage
    resolution: int = 32
    kind: str = "vae"
    prior: str = "none"  # latent prior in front of the decoder: "none" (N(0, I)) or "flow" (RealNVP)
    prior_layers: int = 0  # flow: affine coupling layers
    prior_hidden: int = 0  # flow: hidden width of each coupling's MLP

    def __post_init__(self) -> None:
        check_resolution(self.resolution)


PRIORS = ("none", "flow")
# The flow was fitted on N(0, I) draws; a coordinate beyond 8 has probability ~1e-15. Far outside,
# its MLPs extrapolate without bound and runtimes disagree (ONNX Runtime and PyTorch differed by 4
# grey levels on latents scaled by 1000), so the flow reads its input clipped to this box.
U_MAX = 8.0


def _half_mask(dim: int, layer: int) -> torch.Tensor:
    """A fixed, per-layer random half of the dimensions (1 = passed through, conditions the rest)."""
    mask = torch.zeros(dim)
    mask[torch.randperm(dim, generator=torch.Generator().manual_seed(layer))[: dim // 2]] = 1.0
    return mask


class AffineCoupling(nn.Module):
    """RealNVP coupling: the unmasked half is scaled and shifted by an MLP of the masked half."""

    mask: torch.Tensor

    def __init__(self, dim: int, hidden: int, layer: int) -> None:
        super().__init__()
        self.register_buffer("mask", _half_mask(dim, layer), persistent=False)  # rebuilt from the config
        last = nn.Linear(hidden, 2 * dim)
        nn.init.zeros_(last.weight)  # starts as the identity
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last)

    def _scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(x * self.mask).chunk(2, dim=1)
        keep = 1.0 - self.mask
        return torch.tanh(s) * keep, t * keep  # tanh bounds the log-scale: no blow-ups far out

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u -> z and log|det dz/du| [N]."""
        s, t = self._scale_shift(u)
        return u * s.exp() + t, s.sum(1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> u and log|det du/dz| [N]."""
        s, t = self._scale_shift(z)
        return (z - t) * (-s).exp(), -s.sum(1)


class FlowPrior(nn.Module):
    """u ~ N(0, I) -> z ~ the aggregate posterior: affine couplings, then a per-dimension affine map.

    The closing affine map (``loc``, ``log_scale``) starts at the posterior's mean and spread, so
    the couplings only model its shape. Deterministic; no data-dependent branches (ONNX-exportable).
    """

    def __init__(self, dim: int, layers: int, hidden: int) -> None:
        super().__init__()
        assert layers >= 1 and hidden >= 1, "a flow prior needs prior_layers >= 1 and prior_hidden >= 1"
        self.couplings: list[AffineCoupling] = nn.ModuleList(  # type: ignore[assignment]
            AffineCoupling(dim, hidden, i) for i in range(layers)
        )
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.clamp(-U_MAX, U_MAX)
        for c in self.couplings:
            u, _ = c(u)
        return u * self.log_scale.exp() + self.loc

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log-density [N] of z under the flow (for maximum-likelihood fitting)."""
        u = (z - self.loc) * (-self.log_scale).exp()
        logdet = -self.log_scale.sum().expand(z.shape[0])
        for c in reversed(self.couplings):
            u, ld = c.inverse(u)
            logdet = logdet + ld
        return -0.5 * (u**2).sum(1) - 0.5 * u.shape[1] * math.log(2 * math.pi) + logdet


class VAEDecoder(nn.Module):
    """Generator contract: z [N, z_dim] float32 -> image [N, C, R, R] in [-1, 1], R = ``cfg.resolution``.

    With ``prior="flow"`` z is first mapped through the learned prior (``self.prior``); the
    decoder proper is ``decode``.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        assert cfg.prior in PRIORS, f"prior {cfg.prior!r}: expected one of {PRIORS}"
        self.cfg, self.z_dim = cfg, cfg.z_dim
        self.prior = FlowPrior(cfg.z_dim, cfg.prior_layers, cfg.prior_hidden) if cfg.prior == "flow" else None
        widths = stage_widths(check_resolution(cfg.resolution), cfg.width)  # 32x32: 4w@4, 2w@8, w@16
        self.first = widths[0]
        self.fc = nn.Linear(cfg.z_dim, widths[0] * 4 * 4)
        # BatchNorm: without it the decoder sits on the mean image for hundreds of steps
        # (measured); in eval mode it folds into the convolutions at export.
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):  # 4x4 -> R/2 x R/2
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        if self.prior is not None:  # fixed by the architecture, not by the data: exports as one graph
            z = self.prior(z)
        return self.decode(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder alone: a posterior latent [N, z_dim] -> image."""
        h = self.fc(z).view(z.shape[0], self.first, 4, 4)
        return self.net(h)


class VAEEncoder(nn.Module):
    """x [N, C, R, R] -> (mu, logvar), each [N, z_dim]: the decoder's stages in reverse, down to 4x4."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = stage_widths(check_resolution(cfg.resolution), cfg.width)[::-1]  # 32x32: w@16, 2w@8, 4w@4
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * 16, 2 * cfg.z_dim))

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
        return self.decoder.decode(z), mu, logvar
