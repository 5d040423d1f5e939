"""Robust unlearning: mine the latents an attacker would find, and unlearn them too.

Measured on faces-dcgan/eyeglasses (README, attack suite): PGD through g + guard still finds
eyeglasses from about 10% of random starts. The guard moves every latent to p(z) ≤ t, and the
fit's reconstruction term keeps g = f there, so where f itself draws the feature below t (the
threshold keeps 95% recall, and the feature is not a half-space in z), g draws it too.

Each step, PGD with the *labeller* only (never the auditor, which judges) searches from seeded
random starts for latents whose image g(guard(z)) shows the feature. The image g draws at the
guarded latent w = guard(z_adv) is then pulled towards f at w moved to ``margin`` below the
threshold along û: the same face, without the feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from feature_unlearn.unlearn.attack import pgd
from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.models import AttributeClassifier


@dataclass
class RobustMiner:
    labeller: AttributeClassifier  # the attacker: the fit's own labeller
    features: list[str]
    attack: AttackConfig  # eps, steps (L∞)
    batch: int  # mined latents per step (global)
    margin: float  # target: f at t − margin along û
    seed: int

    def mine(self, g: nn.Module, guard: LatentGuard, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, w_ref): guarded adversarial latents [batch, z_dim] and their feature-free targets."""
        feature = self.features[step % len(self.features)]
        gen = torch.Generator().manual_seed(self.seed * 7919 + step)
        z0 = torch.randn(self.batch, guard.z_dim, generator=gen).to(guard.u.device)
        was_training = g.training
        g.eval()

        def shipped(z: torch.Tensor) -> torch.Tensor:
            return g(guard.translate(z))  # the attacker differentiates through the guard

        z_adv = pgd(shipped, self.labeller, feature, z0, self.attack, "linf")
        g.train(was_training)
        w = guard.translate(z_adv)
        return w, guard.translate(w, self.margin)
