"""Snapshot selection: the epoch whose labeller-read rates sit closest to the data's is the one kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from feature_unlearn.unlearn.models import ClassifierConfig
from feature_unlearn.unlearn.pretrain.select import SnapshotSelector, rate_gap


class _Bright:
    """A labeller reading one binary attribute: the image's mean is above 0."""

    cfg = ClassifierConfig(heads={"bright": 2})

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"bright": (x.flatten(1).mean(1) > 0).long()}


class _Shifted(nn.Module):
    """z [N, 2] -> image [N, 1, 2, 2]: z's first coordinate plus a learnable offset (the share above 0 moves)."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, :1] + self.offset)[:, :, None, None].expand(-1, 1, 2, 2)


def test_rate_gap_is_the_worst_shared_rate_in_points() -> None:
    assert rate_gap({"a": 0.10, "b": 0.50, "only_here": 1.0}, {"a": 0.13, "b": 0.49}) == pytest.approx(3.0)


def test_selector_keeps_the_epoch_closest_to_the_data_and_ignores_the_early_ones() -> None:
    data = torch.cat([torch.ones(30, 1, 2, 2), -torch.ones(70, 1, 2, 2)])  # 30% bright
    selector = SnapshotSelector(_Bright(), data, z_dim=2, first_epoch=1, samples=4000)  # type: ignore[arg-type]
    # P(N(0,1) + c > 0): c = -0.52 gives 30% (epoch 0: perfect but before first_epoch), 0 gives 50%,
    # -0.6 gives 27%, -2 gives 2%.
    for epoch, offset in enumerate((-0.52, 0.0, -0.6, -2.0)):
        selector(epoch, _Shifted(offset))
    assert set(selector.gaps) == {2, 3, 4}  # 1-based; epoch 1 was before the window
    g = _Shifted(5.0)
    chosen = selector.apply(g)
    assert chosen["epoch"] == 3 and g.offset.item() == pytest.approx(-0.6)
    assert chosen["rate_gap"] == pytest.approx(3.0, abs=1.5) and selector.gaps[2] == pytest.approx(20.0, abs=2.0)
