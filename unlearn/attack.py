"""Latent-space PGD: search near random latents for images a classifier sees as the feature.

From each random start z0 ~ N(0, I), ``steps`` signed-gradient ascent steps on the *attacker*
classifier's log-probability of the feature, projected onto the budget around z0:

- ``linf``: |z_i − z0_i| ≤ ε for every coordinate (ε = 0.5: half a prior standard deviation);
- ``l2``: ‖z − z0‖ ≤ ε·√z_dim (the same per-coordinate scale, spent where the gradient points).

Whether a start succeeded is decided by a *judge* classifier on the final image. Attacking and
judging with the same network mostly measures how easily that network is fooled (an oracle that
never learned the feature scored a third "success" that way), so the suite in
``unlearn.robustness`` attacks with one classifier and judges with the other. The guard, when
present, sits inside the attacked function: the attacker controls z only, and differentiates
through the guard's shift.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.models import AttributeClassifier

Generate = Callable[[torch.Tensor], torch.Tensor]  # z [N, z_dim] -> images [N, C, H, W]
NORMS = ("linf", "l2")


def _project(z: torch.Tensor, z0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return z0 + (z - z0).clamp(-eps, eps)
    radius = eps * z.shape[1] ** 0.5
    delta = z - z0
    scale = (radius / delta.norm(dim=1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
    return z0 + delta * scale


def pgd(
    gen: Generate, attacker: AttributeClassifier, feature: str, z0: torch.Tensor, cfg: AttackConfig, norm: str
) -> torch.Tensor:
    """Adversarial latents [N, z_dim] from the starts ``z0``, within the ``norm`` budget of ``cfg.eps``.

    Each start returns its best iterate by the attacker's objective, not the last: signed steps
    oscillate around a hard boundary (the image check's threshold, under the adaptive objective)
    and the last iterate may sit on the wrong side of it (as in Croce & Hein's APGD).
    """
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r}: choose from {', '.join(NORMS)}")
    step = 2.5 * cfg.eps / cfg.steps  # per coordinate, as in Madry et al.
    z, best, best_logp = z0.clone(), z0.clone(), torch.full((len(z0),), -torch.inf)
    for i in range(cfg.steps + 1):
        z.requires_grad_(True)
        logp = torch.nn.functional.logsigmoid(attacker(gen(z))[feature])  # [N]
        with torch.no_grad():
            better = logp.detach() > best_logp
            best[better], best_logp[better] = z.detach()[better], logp.detach()[better]
        if i == cfg.steps:
            break
        (grad,) = torch.autograd.grad(logp.sum(), z)
        with torch.no_grad():
            z = _project(z + step * grad.sign(), z0, cfg.eps, norm)
    return best


def starts(z_dim: int, cfg: AttackConfig) -> torch.Tensor:
    """The fixed random starts [starts, z_dim] every model is attacked from."""
    return torch.randn(cfg.starts, z_dim, generator=torch.Generator().manual_seed(cfg.seed))


def attack(
    gen: Generate, attacker: AttributeClassifier, feature: str, z_dim: int, cfg: AttackConfig, norm: str
) -> torch.Tensor:
    """PGD from every start, in batches of ``cfg.batch``: adversarial latents [starts, z_dim]."""
    return torch.cat([pgd(gen, attacker, feature, z0, cfg, norm) for z0 in starts(z_dim, cfg).split(cfg.batch)])


@torch.no_grad()
def judged(gen: Generate, judge: AttributeClassifier, feature: str, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Whether ``judge`` sees ``feature`` in gen(z): bool [N]."""
    return torch.cat([judge(gen(chunk))[feature] > 0 for chunk in z.split(batch)])


def pgd_success(
    gen: Generate,
    auditor: AttributeClassifier,
    feature: str,
    z_dim: int,
    cfg: AttackConfig,
    norm: str = "l2",
) -> float:
    """Share of starts from which PGD with ``auditor`` reaches an image ``auditor`` labels ``feature``.

    The same-classifier figure: kept as the suite's secondary column, never as its verdict.
    """
    z = attack(gen, auditor, feature, z_dim, cfg, norm)
    return float(judged(gen, auditor, feature, z).float().mean())
