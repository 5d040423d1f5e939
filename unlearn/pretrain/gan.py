"""DCGAN training loop: non-saturating loss, Adam(0.5, 0.999), EMA of the generator, optional PacGAN packing,
the discriminator's normalisation, a lazy R1 penalty and an extra generator term (the labeller's, ``attrterm.py``)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.models import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from feature_unlearn.unlearn.pretrain.common import TrainConfig, batches, ema_update, progress, resolution_of

R1_EVERY = 4  # lazy regularisation (StyleGAN2): the R1 penalty every 4 steps, weighted by 4


def _d_loss(d: DCGANDiscriminator, real: torch.Tensor, fake: torch.Tensor, r1: float, step: int) -> torch.Tensor:
    """The discriminator's non-saturating loss, plus ``r1``/2 · E‖∇ₓ D(real)‖² (Mescheder et al., 2018) when > 0,
    lazily: on every ``R1_EVERY``-th step, weighted by ``R1_EVERY``.

    R1 keeps the discriminator flat on the data, the fix its authors prove for the oscillation an
    unregularised GAN shows near the equilibrium (a discriminator without normalisation drifted, stop 16).
    """
    lazy = r1 > 0 and step % R1_EVERY == 0
    real = real.detach().requires_grad_(lazy)
    logit = d(real)
    loss = F.softplus(-logit).mean() + F.softplus(d(fake)).mean()
    if not lazy:
        return loss
    (grad,) = torch.autograd.grad(logit.sum(), real, create_graph=True)  # [N, C, H, W]
    return loss + 0.5 * r1 * R1_EVERY * grad.square().flatten(1).sum(1).mean()


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
            loss_d = _d_loss(d, real, fake.detach(), cfg.r1, step)
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
