"""Latent batches with enough targets.

Targets (p(z) > t) are a minority of N(0, I) latents (about 10-20% under a recall-oriented
threshold), so a plain random batch of 64 carries few of them and the unlearning gradient is
noisy. Each round draws a pool of prior latents, splits it by the guard's flag, and every
batch takes ``target_frac`` of its rows from the targets and the rest from the non-targets
(with replacement). Both loss terms are group means, so this re-weighting only changes the
variance, not what each term asks for. Batches depend on (seed, round, step) alone, so a
resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import torch

from feature_unlearn.unlearn.errors import DataError
from feature_unlearn.unlearn.guard import LatentGuard


class LatentPool:
    def __init__(self, guard: LatentGuard, pool: int, seed: int, round_index: int) -> None:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + round_index)
        self.z = torch.randn(pool, guard.z_dim, generator=gen)
        with torch.no_grad():  # the pool lives on the CPU; the guard may sit on the training device
            flagged = guard(self.z.to(guard.u.device))[1].cpu()
        self.targets = torch.nonzero(flagged).flatten()
        self.keep = torch.nonzero(~flagged).flatten()
        if len(self.targets) == 0 or len(self.keep) == 0:
            raise DataError(
                "the detector flags no latent (or every latent): check the collected labels and --threshold"
            )
        self.seed = seed

    @property
    def target_share(self) -> float:
        return len(self.targets) / (len(self.targets) + len(self.keep))

    def batch(self, step: int, size: int, target_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [size, z_dim], s [size] bool), rows shuffled so DDP slices carry both groups."""
        gen = torch.Generator().manual_seed(self.seed * 7_919 + step)
        n_t = max(1, min(size - 1, round(size * target_frac)))
        t_idx = self.targets[torch.randint(len(self.targets), (n_t,), generator=gen)]
        k_idx = self.keep[torch.randint(len(self.keep), (size - n_t,), generator=gen)]
        perm = torch.randperm(size, generator=gen)
        z = torch.cat([self.z[t_idx], self.z[k_idx]])[perm]
        s = (torch.arange(size) < n_t)[perm]
        return z, s
