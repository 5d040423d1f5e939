"""VAE training loop (Gaussian likelihood with fixed sigma, KL weight beta), then the learned prior."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.models import VAE, VAEConfig, VAEDecoder
from feature_unlearn.unlearn.models.vae import PRIORS, FlowPrior, VAEEncoder
from feature_unlearn.unlearn.pretrain.common import TrainConfig, batches, progress, resolution_of

FLOW_BATCH = 256
FLOW_LR = 1e-3


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO parts: (reconstruction, KL), each averaged over the batch.

    ``cfg.edge`` > 0 adds the same Gaussian term on the image's finite differences, which a blur
    pays for twice: small features such as a mouth's curve are otherwise averaged away.
    """
    rec = ((recon - x) ** 2).flatten(1).sum(1).mean() / (2 * cfg.sigma**2)
    if cfg.edge > 0:
        diffs = zip(_differences(recon), _differences(x), strict=True)
        rec = rec + cfg.edge * sum(((a - b) ** 2).flatten(1).sum(1).mean() for a, b in diffs) / (2 * cfg.sigma**2)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return rec, kl


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical and horizontal neighbour differences of [N, C, H, W] images."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def vae_arch(cfg: TrainConfig, channels: int, resolution: int = 32) -> VAEConfig:
    """The architecture a recipe trains; an unknown prior kind is a one-line ConfigError."""
    if cfg.prior not in PRIORS:
        raise ConfigError(f"prior {cfg.prior!r}: unknown prior kind (choose from {', '.join(PRIORS)})")
    flow = cfg.prior == "flow"
    return VAEConfig(
        z_dim=cfg.z_dim,
        channels=channels,
        width=cfg.width,
        resolution=resolution,
        prior=cfg.prior,
        prior_layers=cfg.prior_layers if flow else 0,
        prior_hidden=cfg.prior_hidden if flow else 0,
    )


def train_vae(
    data: ImageSet,
    cfg: TrainConfig,
    on_epoch: Callable[[int, VAEDecoder], None] | None = None,
    on_vae: Callable[[VAE], None] | None = None,
    attr_term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> VAEDecoder:
    """Train the VAE; with ``cfg.prior == "flow"`` then fit the flow prior on its aggregate posterior.

    ``on_epoch`` sees the generator after each epoch; after the last one only once the prior is fitted.
    ``on_vae`` sees the whole trained VAE (encoder included) before the prior is fitted.
    ``attr_term(x, recon) -> scalar`` (weighted by ``cfg.attr_weight``, nats per image) joins the loss.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    vae = VAE(vae_arch(cfg, data.shape[0], resolution_of(data)))
    # The prior's parameters get no gradient here (the VAE decodes posterior samples directly).
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
            if attr_term is not None:
                loss = loss + cfg.attr_weight * attr_term(x, recon)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(rec=f"{rec.item():.1f}", kl=f"{kl.item():.1f}", refresh=False)
        if on_epoch is not None and (epoch + 1 < cfg.epochs or vae.decoder.prior is None):
            on_epoch(epoch, vae.decoder.eval())
    bar.close()
    if on_vae is not None:
        on_vae(vae.eval())
    if vae.decoder.prior is not None:
        mu, logvar = posterior(vae.encoder, data)
        fit_flow(vae.decoder.prior, mu, logvar, cfg, gen)
        if on_epoch is not None:
            on_epoch(cfg.epochs - 1, vae.decoder.eval())
    return vae.decoder.eval()


@torch.no_grad()
def posterior(encoder: VAEEncoder, data: ImageSet, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's (mu, logvar) [N, z_dim] for every image, in eval mode."""
    encoder.eval()
    parts = [encoder(x) for x in data.images.split(batch)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def fit_flow(prior: FlowPrior, mu: torch.Tensor, logvar: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> None:
    """Maximum likelihood of the flow on samples of the aggregate posterior (fresh each pass)."""
    assert mu.shape == logvar.shape and mu.ndim == 2, f"mu/logvar must be [N, z_dim], got {tuple(mu.shape)}"
    std = (0.5 * logvar).exp()
    with torch.no_grad():  # start at the posterior's mean and spread: the couplings learn only its shape
        prior.loc.copy_(mu.mean(0))
        prior.log_scale.copy_(torch.log(mu.std(0) + std.mean(0)))
    opt = torch.optim.Adam(prior.parameters(), lr=FLOW_LR, weight_decay=1e-5)
    batch = min(FLOW_BATCH, len(mu))
    steps = cfg.prior_epochs * (len(mu) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bar = progress(steps, "flow prior")
    prior.train()
    last = math.nan
    for _ in range(cfg.prior_epochs):
        for idx in batches(len(mu), batch, gen):
            z = mu[idx] + torch.randn(mu[idx].shape, generator=gen) * std[idx]
            nll = -prior.log_prob(z).mean() / z.shape[1]
            opt.zero_grad(set_to_none=True)
            nll.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 10.0)
            opt.step()
            sched.step()
            last = nll.item()
            bar.update(1)
            bar.set_postfix(nll=f"{last:.3f}", refresh=False)
    bar.close()
    prior.eval()
    assert math.isfinite(last), "the flow prior diverged"
