"""The training steps of one round (unaware of collection, rounds and reporting)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from feature_unlearn.unlearn.device import Runtime
from feature_unlearn.unlearn.errors import UserError
from feature_unlearn.unlearn.fit.anchor import KeptAnchor
from feature_unlearn.unlearn.fit.distributed import Dist
from feature_unlearn.unlearn.fit.loss import UnlearnLoss, msssim_loss
from feature_unlearn.unlearn.fit.robust import RobustMiner
from feature_unlearn.unlearn.fit.sampler import LatentPool
from feature_unlearn.unlearn.guard import LatentGuard

LR_SCHEDULES = ("cosine", "constant")


class FitDivergedError(UserError):
    """The loss became NaN or infinite."""


def scheduled_lr(schedule: str, lr: float, k: int, n: int) -> float:
    """The learning rate at step ``k`` of a segment of ``n`` steps (a round, or --robust's phase).

    cosine decays to 0 over each segment, so every round (and the phase) ends on small steps: Adam at a
    constant rate leaves g jittering around the fit, which redraws non-target images (digit flips).
    """
    assert schedule in LR_SCHEDULES and 0 <= k < n, (schedule, k, n)
    return lr if schedule == "constant" else lr * 0.5 * (1 + math.cos(math.pi * k / n))


@dataclass
class Trainer:
    f: nn.Module  # frozen original
    g: nn.Module  # trainable copy (the module whose weights are saved)
    g_fwd: Callable[[torch.Tensor], torch.Tensor]  # g, possibly DDP-wrapped and compiled
    guard: LatentGuard  # shift-mode guard: ẑ = guard.translate(z)
    loss: UnlearnLoss
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    rt: Runtime
    dist: Dist
    miner: Optional[RobustMiner] = None  # --robust's phase: also unlearn what an attacker would find
    robust_weight: float = 2.0
    shipped: Optional[LatentGuard] = None  # the guard that ships (--guard-margin): the miner attacks through it
    anchor: Optional[KeptAnchor] = None  # --keep-weight: non-targets' kept attributes, as the labeller reads them

    def _robust(self, step: int) -> tuple[torch.Tensor, float]:
        """The robust term on this rank's rows of the mined batch, normalised by the global count."""
        assert self.miner is not None
        shipped = self.shipped or self.guard
        w = self.miner.mine(self.g, shipped, step)
        w_ref, usable = self.miner.targets(self.f, shipped, w, step)
        rows = self.dist.slice(len(w))
        with torch.no_grad(), self.rt.autocast():
            x_ref = self.f(w_ref[rows])
        with self.rt.autocast():
            x_w = self.g_fwd(w[rows])
        x_w, x_ref = x_w.float(), x_ref.float()
        per = (x_w - x_ref).abs().flatten(1).mean(1) + msssim_loss(x_w, x_ref)  # [rows]
        term = (per * usable[rows]).sum() / max(int(usable.sum()), 1)  # usable: the same on every rank
        return term, float(term.detach())

    def step(self, pool: LatentPool, step: int, batch: int, target_frac: float, lr: float) -> dict[str, float]:
        for group in self.opt.param_groups:
            group["lr"] = lr
        z, s = pool.batch(step, batch, target_frac)
        n_target, n_keep = int(s.sum()), int((~s).sum())
        rows = self.dist.slice(batch)
        z, s = z[rows].to(self.rt.device), s[rows].to(self.rt.device)
        with torch.no_grad(), self.rt.autocast():
            x_ref = self.f(self.guard.translate(z))  # f(ẑ); ẑ = z where p(z) ≤ t
        with self.rt.autocast():
            x_g = self.g_fwd(z)
        loss, parts = self.loss(x_g, x_ref, s, n_target, n_keep)
        if self.anchor is not None:
            with self.rt.autocast():
                anchor = self.anchor.per_row(x_g[~s], x_ref[~s]).sum() / max(n_keep, 1)  # global count, as recon
            loss, parts["anchor"] = loss + self.anchor.weight * anchor, float(anchor.detach())
        if self.miner is not None:
            robust, parts["robust"] = self._robust(step)
            loss = loss + self.robust_weight * robust
        if not torch.isfinite(loss):
            raise FitDivergedError(f"the loss became {float(loss)} at step {step}; lower --lr or use --precision fp32")
        self.opt.zero_grad(set_to_none=True)
        # Ranks hold slices of a loss normalised by global counts; DDP averages, so scale by world.
        self.scaler.scale(loss * self.dist.world).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return {"step": float(step), "loss": float(loss.detach()), "lr": lr, **parts}
