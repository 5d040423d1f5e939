"""The latent guard: the single source of truth for the projection test and the shift to ẑ.

The fit uses it to compute ẑ, the export puts it inside the ONNX graph, and PyTorch
backends call it before the generator. Direction and threshold are buffers, so the guard
moves, saves and traces with its module; decisions use tensor ops only (``torch.where``),
never a Python branch on values, so tracing keeps them.

Notation (Moon, Cho & Kim, 2024): z_e = mean(z_pos) − mean(z_neg); û = z_e / ‖z_e‖;
p(z) = z·û (a scalar projection, z is not normalised); a latent holds the feature when
p(z) > t; ẑ = z − (p(z) − t)·û lands exactly on the threshold (p(ẑ) = t). We use the
unit vector û (not z_e) so that ẑ lands on t whatever ‖z_e‖ is.
"""

from __future__ import annotations

import torch
from torch import nn

from feature_unlearn.unlearn.modes import MODES, GuardMode  # noqa: F401 (re-exported)

_SHIFT_PASSES = 3  # several directions: repeat the sequential projections (exact for one)


class LatentGuard(nn.Module):
    """z [N, z_dim] -> (z_out [N, z_dim], flagged [N] bool, score [N] float32).

    ``direction``: [K, z_dim] (or [z_dim]) target vectors, normalised here; ``threshold``: [K].
    ``score`` is p(z) for one direction; with several, p of the most exceeded direction.
    """

    u: torch.Tensor  # [K, z_dim] unit rows û_k (buffer)
    t: torch.Tensor  # [K] thresholds t_k (buffer)

    def __init__(self, direction: torch.Tensor, threshold: torch.Tensor | float, mode: str = "shift") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"guard mode {mode!r}: choose from {', '.join(MODES)}")
        u = torch.as_tensor(direction, dtype=torch.float32).reshape(-1, torch.as_tensor(direction).shape[-1])
        norm = u.norm(dim=1, keepdim=True)
        if not torch.isfinite(u).all() or (norm == 0).any():
            raise ValueError("guard direction must be finite and non-zero")
        t = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        assert t.shape == (u.shape[0],), f"threshold must have {u.shape[0]} values, got {tuple(t.shape)}"
        self.register_buffer("u", u / norm)  # [K, z_dim]
        self.register_buffer("t", t)  # [K]
        self.mode = mode
        self.k = int(u.shape[0])  # a Python int, so tracing sees no tensor-valued branch

    @property
    def z_dim(self) -> int:
        return int(self.u.shape[1])

    def projections(self, z: torch.Tensor) -> torch.Tensor:
        """p_k(z) = z·û_k: [N, K]."""
        return z @ self.u.T

    def translate(self, z: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """ẑ: every latent moved along each û_k where p_k(z) > t_k − margin, onto t_k − margin.

        ``margin`` 0 is the guard's shift; the robust fit asks for a margin below the threshold,
        where the original generator no longer draws the feature.
        """
        for _ in range(_SHIFT_PASSES if self.k > 1 else 1):
            for k in range(self.k):
                excess = (z @ self.u[k] - (self.t[k] - margin)).clamp(min=0.0)  # [N]
                z = z - excess[:, None] * self.u[k]
        return z

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        p = self.projections(z)  # [N, K]
        margin = p - self.t
        worst = margin.argmax(dim=1, keepdim=True)  # [N, 1]
        score = p.gather(1, worst).squeeze(1)
        flagged = (margin > 0).any(dim=1)
        if self.mode == "off":
            return z, torch.zeros_like(flagged), score
        if self.mode == "flag":
            return z, flagged, score
        return self.translate(z), flagged, score

    def extra_repr(self) -> str:
        return f"mode={self.mode}, directions={self.u.shape[0]}, z_dim={self.z_dim}"


class GuardedGenerator(nn.Module):
    """A generator behind its guard: z -> (image [N, C, H, W] in [-1, 1], flagged, score)."""

    def __init__(self, generator: nn.Module, guard: LatentGuard) -> None:
        super().__init__()
        assert generator.z_dim == guard.z_dim, f"generator z_dim {generator.z_dim} != guard z_dim {guard.z_dim}"
        self.generator, self.guard = generator, guard
        self.z_dim = guard.z_dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_out, flagged, score = self.guard(z)
        return self.generator(z_out), flagged, score
