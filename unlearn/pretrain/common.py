"""Pieces shared by the training loops: batching, augmentation, EMA, progress."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from feature_unlearn.unlearn.data.augment import AugmentConfig
from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.models.dcgan import RESOLUTIONS


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch: int = 64
    lr: float = 2e-4
    seed: int = 0
    beta: float = 1.0  # VAE: KL weight
    sigma: float = 0.2  # VAE: pixel noise scale of the Gaussian likelihood
    edge: float = 0.0  # VAE: weight of the same likelihood on neighbour differences (keeps edges)
    ema: float = 0.999  # GAN: generator weight averaging
    pack: int = 1  # GAN: images per discriminator decision (PacGAN; 1 = plain DCGAN)
    d_norm: str = "batch"  # GAN: discriminator normalisation (batch | none | spectral)
    r1: float = 0.0  # GAN: weight gamma of the R1 penalty on real images (Mescheder et al. 2018; 0 = off)
    select_last: int = 0  # GAN: keep the best of the last N epochs by the labeller's rate gap (0: the last)
    attr_weight: float = 0.0  # GAN/VAE: weight of the labeller's attribute term (pretrain/attrterm.py; 0 = off)
    width: int = 32  # network width (ngf/ndf for the GAN, base width otherwise)
    z_dim: int = 32
    augment: AugmentConfig | None = None  # classifiers: degradations; None = the old per-batch jitter only
    prior: str = "none"  # VAE: latent prior folded into the generator ("none" | "flow")
    prior_layers: int = 8  # VAE flow prior: affine coupling layers
    prior_hidden: int = 256  # VAE flow prior: hidden width of each coupling's MLP
    prior_epochs: int = 60  # VAE flow prior: passes over the aggregate posterior


def resolution_of(data: ImageSet) -> int:
    """The generator resolution a dataset's images ask for; a size the VAE and DCGAN lack is a one-line error."""
    _, h, w = data.shape
    if h != w or h not in RESOLUTIONS:
        sizes = ", ".join(map(str, RESOLUTIONS))
        raise ConfigError(f"--dataset {data.name}: images are {w}x{h}; the vae and dcgan take square images of {sizes}")
    return h


def batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch; the last partial batch is dropped."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n - batch + 1, batch):
        yield perm[i : i + batch]


def jitter(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (one shift per batch; ``torch.roll`` wraps around the border)."""
    dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@torch.no_grad()
def ema_update(avg: nn.Module, live: nn.Module, decay: float) -> None:
    for pa, pl in zip(avg.parameters(), live.parameters(), strict=True):
        pa.lerp_(pl, 1.0 - decay)
    for ba, bl in zip(avg.buffers(), live.buffers(), strict=True):
        ba.copy_(bl)


def progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=2.0)
