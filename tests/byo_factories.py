"""Factories that break the bring-your-own contract, for tests/integration/test_byo.py (not a test module)."""

from __future__ import annotations

import torch
from torch import nn


class _Gen(nn.Module):
    def __init__(self, side: int = 32, scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim, self.side, self.scale = 4, side, scale
        self.lin = nn.Linear(4, side * side)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.lin(z)).view(len(z), 1, self.side, self.side)


def not_a_module() -> str:
    return "a generator"


def tiny_images() -> nn.Module:
    return _Gen(side=8)


def out_of_range() -> nn.Module:
    return _Gen(scale=3.0)


def no_z_dim() -> nn.Module:
    return nn.Linear(4, 4)


class _Detached(_Gen):
    """Images with no gradient path back to z (as a generator that renders without autograd would)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z).detach()


def detached() -> nn.Module:
    return _Detached()
