"""evaluate's reference for flips: a random latent step sized to the fit's image change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from feature_unlearn.unlearn.flipfloor import random_step_flips, step_radius
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig


class _Linear(nn.Module):
    """f(z): linear images [N, 1, 4, 4], so the image change grows exactly in proportion to the step."""

    def __init__(self, z_dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(z_dim, 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z).view(-1, 1, 4, 4)


class _FirstPixel(AttributeClassifier):
    """Two binary heads: is the first pixel positive, is the last?"""

    def __init__(self) -> None:
        super().__init__(ClassifierConfig(kind="cnn", channels=1, heads={"a": 2, "b": 2}, width=4))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": 10 * x[:, 0, 0, 0], "b": 10 * x[:, 0, 3, 3]}


def test_the_radius_gives_the_asked_image_change() -> None:
    f = _Linear()
    z = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    d = torch.randn(300, 6, generator=torch.Generator().manual_seed(2))
    d = d / d.norm(dim=1, keepdim=True)
    with torch.no_grad():
        x = f(z)
        for l1 in (0.01, 0.3, 5.0):  # 5.0 needs the bracket to grow past its first guess
            r = step_radius(f, z, d, x, l1)
            assert float((f(z + r * d) - x).abs().mean()) == pytest.approx(l1, rel=5e-3)


def test_the_flips_are_the_labels_the_step_changes() -> None:
    f, auditor = _Linear(), _FirstPixel()
    z = torch.randn(1000, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = f(z)
    out = random_step_flips(f, auditor, z, x, 0.2, ["b"], seed=4)
    assert set(out["flips"]) == {"a"} and out["l1"] == pytest.approx(0.2, rel=0.1)
    d = torch.randn(z.shape, generator=torch.Generator().manual_seed(4))
    moved = f(z + out["radius"] * d / d.norm(dim=1, keepdim=True)).detach()
    want = float(((x[:, 0, 0, 0] > 0) != (moved[:, 0, 0, 0] > 0)).float().mean())
    assert out["flips"]["a"] == pytest.approx(want) and 0.01 < want < 0.5
    assert random_step_flips(f, auditor, z, x, 0.2, ["b"], seed=4, before=auditor.predict(x)) == out  # labels given
    larger = random_step_flips(f, auditor, z, x, 1.0, ["b"], seed=4)
    assert larger["flips"]["a"] > out["flips"]["a"]  # a larger edit crosses the boundary more often
