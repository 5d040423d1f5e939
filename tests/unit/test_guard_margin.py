"""The shipped guard's margin: the largest one the kept attributes allow (unlearn/fit/margin.py)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from feature_unlearn.unlearn.fit.margin import MARGINS, choose_margin, kept_shifts
from feature_unlearn.unlearn.guard import LatentGuard


class _Ramp(nn.Module):
    """g(z): a 4x4 image whose every pixel is z_0 (so a classifier can read where the guard put z)."""

    z_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.scale * z[:, :1, None, None]).expand(-1, 1, 4, 4)


class _Labeller:
    """A kept attribute that the image loses once z_0 is moved below −0.6."""

    cfg = SimpleNamespace(heads={"kept": 2})

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"kept": (x.mean(dim=(1, 2, 3)) > -0.6).long()}


def test_the_margin_stops_before_a_kept_attribute_moves() -> None:
    guard = LatentGuard(torch.tensor([1.0, 0.0]), 0.0, mode="shift", margin=0.25)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    margin, table = choose_margin(_Ramp(), guard, _Labeller(), ["kept"], z, budget=1.0)  # type: ignore[arg-type]
    assert margin == 0.5  # at 0.75 every flagged latent (about half) lands below −0.6 and loses the attribute
    assert [row["margin"] for row in table] == [0.5, 0.75] and table[0]["largest_shift"] == 0.0
    assert table[1]["largest_shift"] > 40 and table[1]["attribute"] == "kept"


def test_without_kept_attributes_the_margin_is_the_largest() -> None:
    guard = LatentGuard(torch.tensor([1.0, 0.0]), 0.0, mode="shift", margin=0.25)
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    margin, table = choose_margin(_Ramp(), guard, _Labeller(), [], z, budget=1.0)  # type: ignore[arg-type]
    assert margin == MARGINS[-1] and len(table) == len(MARGINS) - 1


def test_the_fit_reports_each_kept_attribute_on_f_and_on_what_ships() -> None:
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    ramp, p = _Ramp(), float((z[:, 0] > -0.6).float().mean())  # p: f's kept rate, every latent above −0.6
    near = LatentGuard(torch.tensor([1.0, 0.0]), 0.0, mode="shift", margin=0.25)
    [row] = kept_shifts(ramp, ramp, near, _Labeller(), ["kept"], z)  # type: ignore[arg-type]
    assert row["attribute"] == "kept" and row["f"] == 100 * p and row["shift"] == 0.0  # flagged land at −0.25
    far = LatentGuard(torch.tensor([1.0, 0.0]), 0.0, mode="shift", margin=1.0)  # flagged land at −1: lose it
    [row] = kept_shifts(ramp, ramp, far, _Labeller(), ["kept"], z)  # type: ignore[arg-type]
    assert abs(row["shift"] + 100 * float((z[:, 0] > 0).float().mean())) < 1e-3  # every flagged latent lost it
