"""Multi-label attribute classifiers: the *labeller* (plain CNN) and the *auditor* (ResNet).

Two architectures trained from different seeds, so that evaluation never grades the
method with the network that labelled its training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ClassifierConfig:
    kind: str = "cnn"  # "cnn" (labeller) or "resnet" (auditor)
    channels: int = 1
    heads: dict[str, int] = field(default_factory=dict)  # attribute -> classes (2 = binary)
    width: int = 32


def _cnn(cfg: ClassifierConfig) -> nn.Sequential:
    w = cfg.width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(True),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(cfg.channels, w),
        *block(w, 2 * w),
        *block(2 * w, 4 * w),
        nn.Flatten(),
        nn.Linear(4 * w * 16, 256),
        nn.ReLU(True),
        nn.Dropout(0.3),
    )


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.GroupNorm(8, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.GroupNorm(8, cout),
        )
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def _resnet(cfg: ClassifierConfig) -> nn.Sequential:
    w = cfg.width
    return nn.Sequential(
        nn.Conv2d(cfg.channels, w, 3, 1, 1),
        nn.SiLU(),
        _Residual(w, w, 1),
        _Residual(w, 2 * w, 2),
        _Residual(2 * w, 4 * w, 2),
        _Residual(4 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class AttributeClassifier(nn.Module):
    """x [N, C, 32, 32] in [-1, 1] -> {attribute: logits}; binary heads give [N], K-way [N, K]."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = _cnn(cfg) if cfg.kind == "cnn" else _resnet(cfg)
        self.num_features = 256 if cfg.kind == "cnn" else 4 * cfg.width
        self.heads = nn.ModuleDict({k: nn.Linear(self.num_features, 1 if c == 2 else c) for k, c in cfg.heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.cfg.channels, (
            f"expected [N,{self.cfg.channels},H,W], got {tuple(x.shape)}"
        )
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {k: head(h).squeeze(1) if self.cfg.heads[k] == 2 else head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 512) -> dict[str, torch.Tensor]:
        """Hard labels per attribute ([N] int64), in eval mode, batched."""
        return self.readings(x, batch)[0]

    @torch.no_grad()
    def readings(self, x: torch.Tensor, batch: int = 512) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per attribute the hard label [N] int64 and the probability the network gives it [N], batched."""
        labels: dict[str, list[torch.Tensor]] = {k: [] for k in self.cfg.heads}
        confidence: dict[str, list[torch.Tensor]] = {k: [] for k in self.cfg.heads}
        for chunk in x.split(batch):
            for k, logit in self(chunk).items():
                if self.cfg.heads[k] == 2:
                    p = torch.sigmoid(logit)
                    labels[k].append((logit > 0).long())
                    confidence[k].append(torch.maximum(p, 1 - p))
                else:
                    top, label = logit.softmax(1).max(1)
                    labels[k].append(label)
                    confidence[k].append(top)
        return {k: torch.cat(v) for k, v in labels.items()}, {k: torch.cat(v) for k, v in confidence.items()}

    def probability(self, x: torch.Tensor, attribute: str) -> torch.Tensor:
        """Differentiable P(attribute present) [N] for a binary attribute (used by the attack)."""
        assert self.cfg.heads[attribute] == 2, f"{attribute} is not binary"
        return torch.sigmoid(self(x)[attribute])
