"""The R1 penalty of the DCGAN's discriminator loss (``pretrain/gan.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from feature_unlearn.unlearn.pretrain.gan import R1_EVERY, _d_loss


class _Linear(nn.Module):
    """D(x) = w · x: its input gradient is w for every image, so R1 is ‖w‖² exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


def test_r1_adds_the_squared_input_gradient_on_real_images() -> None:
    torch.manual_seed(0)
    d = _Linear(torch.randn(3 * 4 * 4))
    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    plain = _d_loss(d, real, fake, 0.0, step=0)  # type: ignore[arg-type]
    assert torch.allclose(plain, F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean())
    gamma = 2.0
    with_r1 = _d_loss(d, real, fake, gamma, step=R1_EVERY)  # type: ignore[arg-type]
    expected = plain + 0.5 * gamma * R1_EVERY * d.w.detach().square().sum()
    assert torch.allclose(with_r1, expected, rtol=1e-5)
    # lazy: the steps between two penalised ones carry the plain loss
    assert torch.allclose(_d_loss(d, real, fake, gamma, step=1), plain)  # type: ignore[arg-type]


def test_r1_gradient_shrinks_the_discriminator_on_real_images() -> None:
    """The penalty's own gradient on w is gamma·R1_EVERY·w: it pulls a steep discriminator flat."""
    d = _Linear(torch.ones(12))
    real = torch.zeros(4, 3, 2, 2)  # D(real) = 0 and D(fake) = 0: the logistic terms' gradients cancel
    _d_loss(d, real, real.clone(), 1.0, step=0).backward()  # type: ignore[arg-type]
    assert d.w.grad is not None
    assert torch.allclose(d.w.grad, torch.full((12,), float(R1_EVERY)), atol=1e-6)
