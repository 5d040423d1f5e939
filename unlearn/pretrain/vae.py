"""VAE training loop (Gaussian likelihood with fixed sigma, KL weight beta)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.models import VAE, VAEConfig, VAEDecoder
from feature_unlearn.unlearn.pretrain.common import TrainConfig, batches, progress


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO parts: (reconstruction, KL), each averaged over the batch."""
    rec = ((recon - x) ** 2).flatten(1).sum(1).mean() / (2 * cfg.sigma**2)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return rec, kl


def train_vae(
    data: ImageSet, cfg: TrainConfig, on_epoch: Callable[[int, VAEDecoder], None] | None = None
) -> VAEDecoder:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    arch = VAEConfig(z_dim=cfg.z_dim, channels=data.shape[0], width=cfg.width)
    vae = VAE(arch)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    steps = cfg.epochs * (len(data) // cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bar = progress(steps, "vae")
    for epoch in range(cfg.epochs):
        vae.train()
        for idx in batches(len(data), cfg.batch, gen):
            x = data.images[idx]
            recon, mu, logvar = vae(x)
            rec, kl = vae_loss(x, recon, mu, logvar, cfg)
            loss = rec + cfg.beta * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(rec=f"{rec.item():.1f}", kl=f"{kl.item():.1f}", refresh=False)
        if on_epoch is not None:
            on_epoch(epoch, vae.decoder.eval())
    bar.close()
    return vae.decoder.eval()
