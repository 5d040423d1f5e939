"""The unlearning objective: L = L_recon + α (L_unlearn + L_percep).

Per sample i with s_i = 1 for target latents (p(z) > t): L_recon averages ‖g(z) − f(z)‖₁
over non-targets, L_unlearn ‖g(z) − f(ẑ)‖₁ and L_percep 1 − MS-SSIM(g(z), f(ẑ)) over targets.
Group means are taken over the *global* batch counts, so that DDP ranks, each holding a
slice, average to exactly the single-process loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from torch import nn

MSSSIM_WIN = 3
# pytorch-msssim needs short side > (win − 1)·16 = 32 whatever the number of scales: 32x32 images are upsampled to 64.


def msssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample 1 − MS-SSIM [N] of images in [-1, 1] (upsampled so small images are valid)."""
    short = min(x.shape[-2:])
    if short <= (MSSSIM_WIN - 1) * 16:
        factor = (MSSSIM_WIN - 1) * 16 // short + 1
        x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        y = F.interpolate(y, scale_factor=factor, mode="bilinear", align_corners=False)
    # Clamp away from 0: MS-SSIM raises per-scale values to fractional powers (NaN gradients at 0).
    x01, y01 = ((x + 1) / 2).clamp(0, 1), ((y + 1) / 2).clamp(0, 1)
    return 1.0 - ms_ssim(x01, y01, data_range=1.0, size_average=False, win_size=MSSSIM_WIN).clamp(min=1e-6)


class UnlearnLoss(nn.Module):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(
        self, x_g: torch.Tensor, x_ref: torch.Tensor, s: torch.Tensor, n_target: int, n_keep: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """x_g = g(z), x_ref = f(ẑ) (= f(z) for non-targets, where ẑ = z): [N, C, H, W]; s [N] bool.

        n_target, n_keep: target / non-target counts in the global batch.
        """
        assert x_g.shape == x_ref.shape and s.shape == x_g.shape[:1], (x_g.shape, x_ref.shape, s.shape)
        x_g, x_ref = x_g.float(), x_ref.float()  # losses in fp32 whatever the autocast dtype
        l1 = (x_g - x_ref).abs().flatten(1).mean(1)  # [N]
        recon = l1[~s].sum() / max(n_keep, 1)
        unlearn = l1[s].sum() / max(n_target, 1)
        percep = msssim_loss(x_g[s], x_ref[s]).sum() / max(n_target, 1) if bool(s.any()) else x_g.sum() * 0
        loss = recon + self.alpha * (unlearn + percep)
        return loss, {
            "recon": float(recon.detach()),
            "unlearn": float(unlearn.detach()),
            "percep": float(percep.detach()),
        }
