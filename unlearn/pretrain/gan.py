"""DCGAN training loop: non-saturating loss, Adam(0.5, 0.999), EMA of the generator, optional PacGAN packing,
the discriminator's normalisation and an extra generator term (the labeller's, ``attrterm.py``)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.models import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from feature_unlearn.unlearn.pretrain.common import TrainConfig, batches, ema_update, progress, resolution_of


def train_dcgan(
    data: ImageSet,
    cfg: TrainConfig,
    on_epoch: Callable[[int, DCGANGenerator], None] | None = None,
    attr_term: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> DCGANGenerator:
    """``attr_term(fake) -> scalar`` (weighted by ``cfg.attr_weight``) joins the generator's loss."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    res = resolution_of(data)
    arch = DCGANConfig(z_dim=cfg.z_dim, channels=data.shape[0], ngf=cfg.width, ndf=cfg.width, resolution=res)
    g, d = DCGANGenerator(arch), DCGANDiscriminator(arch, pack=cfg.pack, norm=cfg.d_norm)
    g_ema = copy.deepcopy(g).eval()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    steps = cfg.epochs * (len(data) // cfg.batch)
    bar = progress(steps, "dcgan")
    step = 0
    for epoch in range(cfg.epochs):
        g.train()
        d.train()
        for idx in batches(len(data), cfg.batch, gen):
            real = data.images[idx]
            z = torch.randn(len(idx), cfg.z_dim)
            fake = g(z)
            loss_d = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = F.softplus(-d(fake)).mean()
            total = loss_g + cfg.attr_weight * attr_term(fake) if attr_term is not None else loss_g
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            opt_g.step()
            step += 1
            ema_update(g_ema, g, min(cfg.ema, step / (step + 10)))  # warm-up: early weights fade fast
            bar.update(1)
            bar.set_postfix(d=f"{loss_d.item():.2f}", g=f"{loss_g.item():.2f}", refresh=False)
        if on_epoch is not None:
            on_epoch(epoch, g_ema)
    bar.close()
    return g_ema.eval()
