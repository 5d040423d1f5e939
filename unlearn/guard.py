"""The latent guard: the single source of truth for the projection test and the shift to ẑ.

The fit uses it to compute ẑ, the export puts it inside the ONNX graph, and PyTorch
backends call it before the generator. Direction and threshold are buffers, so the guard
moves, saves and traces with its module; decisions use tensor ops only (``torch.where``),
never a Python branch on values, so tracing keeps them.

Notation (Moon, Cho & Kim, 2024): z_e = mean(z_pos) − mean(z_neg); û = z_e / ‖z_e‖;
p(z) = z·û (a scalar projection, z is not normalised); a latent holds the feature when
p(z) > t; ẑ = z − (p(z) − t)·û lands exactly on the threshold (p(ẑ) = t). We use the
unit vector û (not z_e) so that ẑ lands on t whatever ‖z_e‖ is.

Kept attributes (``fit --keep``): the shift may run along another vector v_k with û_k·v_k = 1,
ẑ = z − (p(z) − t)·v_k, which still lands exactly on t (the detector is unchanged) but moves z
only within the subspace orthogonal to the kept attributes' directions (``unlearn.keep``), the
oblique form of InterFaceGAN's conditional manipulation.
"""

from __future__ import annotations

import torch
from torch import nn

from feature_unlearn.unlearn.artifacts import GuardRecord
from feature_unlearn.unlearn.modes import MODES, GuardMode  # noqa: F401 (re-exported)

_SHIFT_PASSES = 3  # several directions: repeat the sequential projections (exact for one)


class LatentGuard(nn.Module):
    """z [N, z_dim] -> (z_out [N, z_dim], flagged [N] bool, score [N] float32).

    ``direction``: [K, z_dim] (or [z_dim]) target vectors, normalised here; ``threshold``: [K];
    ``shift``: [K, z_dim] shift vectors (default û_k), rescaled here so that û_k·v_k = 1.
    ``score`` is p(z) for one direction; with several, p of the most exceeded direction.
    """

    u: torch.Tensor  # [K, z_dim] unit rows û_k (buffer)
    t: torch.Tensor  # [K] thresholds t_k (buffer)
    v: torch.Tensor  # [K, z_dim] shift rows v_k, û_k·v_k = 1 (buffer)
    m: torch.Tensor  # [K] margins: a flagged latent lands at t_k − m_k (buffer; 0 = the paper's ẑ)

    def __init__(
        self,
        direction: torch.Tensor,
        threshold: torch.Tensor | float,
        mode: str = "shift",
        shift: torch.Tensor | None = None,
        margin: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"guard mode {mode!r}: choose from {', '.join(MODES)}")
        u = _rows(direction)
        norm = u.norm(dim=1, keepdim=True)
        if not torch.isfinite(u).all() or (norm == 0).any():
            raise ValueError("guard direction must be finite and non-zero")
        u = u / norm
        t = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        assert t.shape == (u.shape[0],), f"threshold must have {u.shape[0]} values, got {tuple(t.shape)}"
        self.register_buffer("u", u)  # [K, z_dim]
        self.register_buffer("t", t)  # [K]
        self.register_buffer("v", u.clone() if shift is None else _shift_rows(shift, u))  # [K, z_dim]
        if not margin >= 0.0:
            raise ValueError(f"guard margin must be ≥ 0, got {margin}")
        self.register_buffer("m", torch.full_like(t, float(margin)))  # [K]
        self.mode = mode
        self.k = int(u.shape[0])  # a Python int, so tracing sees no tensor-valued branch

    @property
    def z_dim(self) -> int:
        return int(self.u.shape[1])

    def projections(self, z: torch.Tensor) -> torch.Tensor:
        """p_k(z) = z·û_k: [N, K]."""
        return z @ self.u.T

    def translate(self, z: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """ẑ: every latent with p_k(z) > t_k − margin moved along v_k onto t_k − margin − m_k.

        ``margin`` 0 is the guard's shift (flagged latents land at t_k − m_k; the others do not
        move, so the guard's own margin is a jump at t_k, not a wider band); the robust fit asks
        for a margin below the threshold, where the original generator no longer draws the feature.
        """
        for _ in range(_SHIFT_PASSES if self.k > 1 else 1):
            for k in range(self.k):
                p = z @ self.u[k]  # [N]
                target = self.t[k] - margin - self.m[k]
                excess = torch.where(p > self.t[k] - margin, p - target, torch.zeros_like(p)).clamp(min=0.0)
                z = z - excess[:, None] * self.v[k]
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
        oblique = not torch.equal(self.u, self.v)
        return (
            f"mode={self.mode}, directions={self.u.shape[0]}, z_dim={self.z_dim}, oblique={oblique}, "
            f"margin={float(self.m.max()):g}"
        )


def _rows(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    return x.reshape(-1, x.shape[-1])


def _shift_rows(shift: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v_k / (û_k·v_k): the shift rows scaled so that each lands exactly on its threshold."""
    v = _rows(shift)
    assert v.shape == u.shape, f"shift must be {tuple(u.shape)}, got {tuple(v.shape)}"
    dot = (v * u).sum(dim=1, keepdim=True)  # [K, 1]
    if not torch.isfinite(v).all() or (dot <= 1e-3).any():
        raise ValueError("guard shift rows must be finite and point along their directions (û·v > 0)")
    return v / dot


def guard_from_record(record: GuardRecord, mode: str = "shift") -> LatentGuard:
    """The guard a fit saved (``GuardRecord``): the one constructor of fit, evaluate and export."""
    shift = None if record.shift is None else torch.tensor(record.shift)
    return LatentGuard(torch.tensor(record.direction), torch.tensor(record.threshold), mode, shift, record.margin)


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
