"""The generator's weight average (``pretrain/common.ema_update``, ``--ema``): decay 0 keeps the live generator."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.pretrain.common import TrainConfig, ema_update
from feature_unlearn.unlearn.pretrain.gan import train_dcgan


def test_ema_update_moves_the_average_by_one_minus_decay() -> None:
    avg, live = nn.Linear(3, 2), nn.Linear(3, 2)
    before = avg.weight.detach().clone()
    ema_update(avg, live, 0.9)
    assert torch.allclose(avg.weight, 0.9 * before + 0.1 * live.weight)
    ema_update(avg, live, 0.0)
    assert torch.equal(avg.weight, live.weight) and torch.equal(avg.bias, live.bias)


def test_dcgan_decay_changes_the_kept_generator() -> None:
    """Same seed and data: the live generator (decay 0) and a slow average (0.999) are different models."""
    torch.manual_seed(0)
    data = ImageSet("toy", torch.rand(64, 1, 32, 32) * 2 - 1, {}, {})
    cfg = TrainConfig(epochs=1, batch=8, lr=1e-2, width=4, z_dim=4)
    live = train_dcgan(data, dataclasses.replace(cfg, ema=0.0))
    slow = train_dcgan(data, cfg)
    z = torch.randn(8, 4)
    with torch.no_grad():
        gap = (live(z) - slow(z)).abs().max().item()
    assert gap > 1e-3
    # the run is reproducible, so the gap is the decay's and not the seed's
    again = train_dcgan(data, dataclasses.replace(cfg, ema=0.0))
    with torch.no_grad():
        assert torch.allclose(again(z), live(z), atol=1e-6)
