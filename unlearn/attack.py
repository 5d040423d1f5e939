"""Latent-space PGD: search near random latents for images the auditor sees as the feature.

From each random start z0 ~ N(0, I), ``steps`` signed-gradient ascent steps on the auditor's
log-probability of the feature, projected onto the L2 ball ‖z − z0‖ ≤ ε·√z_dim (so ε is a
per-coordinate scale; ε = 0.5 lets the attacker move each coordinate by about half a prior
standard deviation). A start counts as a success when the final image is classified positive.
The guard, when present, sits inside the attacked function: the attacker only controls z.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.models import AttributeClassifier


def pgd_success(
    gen: Callable[[torch.Tensor], torch.Tensor],
    auditor: AttributeClassifier,
    feature: str,
    z_dim: int,
    cfg: AttackConfig,
) -> float:
    """Share of random starts from which PGD reaches an image the auditor labels ``feature``."""
    z_all = torch.randn(cfg.starts, z_dim, generator=torch.Generator().manual_seed(cfg.seed))
    radius = cfg.eps * z_dim**0.5
    step_size = 2.5 * radius / cfg.steps / z_dim**0.5  # per coordinate, as in Madry et al.
    hits = 0
    for z0 in z_all.split(cfg.batch):
        z = z0.clone()
        for _ in range(cfg.steps):
            z.requires_grad_(True)
            logp = torch.nn.functional.logsigmoid(auditor(gen(z))[feature]).sum()
            (grad,) = torch.autograd.grad(logp, z)
            with torch.no_grad():
                z = z + step_size * grad.sign()
                delta = z - z0
                norm = delta.norm(dim=1, keepdim=True).clamp(min=1e-12)
                z = z0 + delta * (radius / norm).clamp(max=1.0)
        with torch.no_grad():
            hits += int((auditor(gen(z))[feature] > 0).sum())
    return hits / cfg.starts
