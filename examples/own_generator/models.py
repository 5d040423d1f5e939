"""A generator and two detectors that are not feature-unlearn's: the example of bringing your own.

``SpriteGenerator`` is a 64×64 RGB generator of a different family from the zoo's: an MLP maps
z [N, 16] to 12 scene parameters (background and skin colour, face position and size, and the
opacities of eyeglasses and a hat), and a differentiable soft renderer draws them. Eyeglasses are
entangled with the hat on purpose (their logits share z[:, 0]), like eyeglasses and grey hair in
the zoo's faces. ``Detector`` (the labeller) and ``Auditor`` (the judge) are two different small
networks trained on its images; both return ``{"eyeglasses": logits [N], "hat": logits [N]}``.

The factories below load the weights that ``python -m examples.own_generator.train`` wrote beside
this file, which is what ``--model examples.own_generator.models:generator --trust-code`` calls.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).parent
SIZE = 64
Z_DIM = 16
PARAMS = 12  # bg rgb, skin rgb, cx, cy, radius, glasses logit, hat logit, mouth


class SpriteGenerator(nn.Module):
    """z [N, 16] -> image [N, 3, 64, 64] in [-1, 1]."""

    xs: torch.Tensor  # [64, 64] pixel x coordinates in [-1, 1] (buffer)
    ys: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.mlp = nn.Sequential(nn.Linear(Z_DIM, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, PARAMS))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
        self.register_buffer("xs", xs.contiguous(), persistent=False)  # the pixel grid, rebuilt, never saved
        self.register_buffer("ys", ys.contiguous(), persistent=False)

    def params(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z)  # [N, 12]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == Z_DIM, f"z must be [N, {Z_DIM}], got {tuple(z.shape)}"
        return render(self.params(z), self.xs, self.ys)


def _disc(
    cx: torch.Tensor, cy: torch.Tensor, r: float | torch.Tensor, xs: torch.Tensor, ys: torch.Tensor
) -> torch.Tensor:
    d = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2).sqrt()
    return torch.sigmoid((torch.as_tensor(r)[..., None, None] - d) / 0.015)  # [N, H, W]


def _ring(cx: torch.Tensor, cy: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    d = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2).sqrt()
    return torch.sigmoid((0.03 - (d - 0.11).abs()) / 0.01)


def render(p: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Scene parameters [N, 12] -> image [N, 3, H, W] in [-1, 1] (every step differentiable)."""
    bg, skin = torch.sigmoid(p[:, 0:3]), torch.sigmoid(p[:, 3:6])
    cx, cy = 0.15 * torch.tanh(p[:, 6]), 0.15 * torch.tanh(p[:, 7])
    r = 0.5 + 0.1 * torch.tanh(p[:, 8])
    glasses, hat = torch.sigmoid(4 * p[:, 9]), torch.sigmoid(4 * p[:, 10])
    face = _disc(cx, cy, r, xs, ys)
    img = bg[:, :, None, None] * (1 - face[:, None]) + skin[:, :, None, None] * face[:, None]
    eyes = _disc(cx - 0.2, cy - 0.1, 0.05, xs, ys) + _disc(cx + 0.2, cy - 0.1, 0.05, xs, ys)
    img = img * (1 - 0.8 * eyes[:, None])
    mouth = _disc(cx, cy + 0.25 + 0.03 * torch.tanh(p[:, 11]), 0.07, xs, ys) * (ys > (cy + 0.25)[:, None, None])
    img = img * (1 - 0.6 * mouth[:, None])
    frame = (_ring(cx - 0.2, cy - 0.1, xs, ys) + _ring(cx + 0.2, cy - 0.1, xs, ys)).clamp(max=1)
    frame = frame * glasses[:, None, None]
    img = img * (1 - frame[:, None]) + 0.05 * frame[:, None]  # dark frames
    band = face * torch.sigmoid((cy[:, None, None] - 0.25 * r[:, None, None] - ys) / 0.02)
    crown = band * hat[:, None, None]
    red = torch.tensor([0.85, 0.1, 0.1], device=p.device)[None, :, None, None]
    img = img * (1 - crown[:, None]) + red * crown[:, None]
    return img * 2 - 1


class Detector(nn.Module):
    """The labeller: three strided convolutions and global max pooling (max: thin frames are local)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2), nn.GELU(), nn.Conv2d(16, 32, 3, 2, 1), nn.GELU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.GELU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"eyeglasses": out[:, 0], "hat": out[:, 1]}


class Auditor(nn.Module):
    """The judge: a different network (average-pooled to 16×16, then an MLP), trained from another seed."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(4), nn.Flatten(), nn.Linear(3 * 16 * 16, 128), nn.ReLU(), nn.Linear(128, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"eyeglasses": out[:, 0], "hat": out[:, 1]}


def _loaded(module: nn.Module, name: str) -> nn.Module:
    module.load_state_dict(load_file(str(HERE / f"{name}.safetensors")))
    return module.eval()


def generator() -> SpriteGenerator:
    """The pre-trained generator (``--model examples.own_generator.models:generator``)."""
    return _loaded(SpriteGenerator(), "generator")  # type: ignore[return-value]


def detector() -> Detector:
    """The labeller (``--labeller examples.own_generator.models:detector``)."""
    return _loaded(Detector(), "detector")  # type: ignore[return-value]


def auditor() -> Auditor:
    """The independent judge (``evaluate --auditor examples.own_generator.models:auditor``)."""
    return _loaded(Auditor(), "auditor")  # type: ignore[return-value]


def truth(g: SpriteGenerator, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ground truth from the scene parameters: eyeglasses / hat drawn at more than half opacity."""
    with torch.no_grad():
        p = g.params(z)
    return {"eyeglasses": (p[:, 9] > 0).float(), "hat": (p[:, 10] > 0).float()}
