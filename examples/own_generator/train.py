"""Build the example's weights: ``python -m examples.own_generator.train`` (about a minute on 2 cores).

The generator's MLP is fitted to a fixed random affine map of z (so its parameters are smooth in
z, like a trained generator's), with the eyeglasses logit 1.6·z0 − 2.4 (about 7% of samples) and
the hat logit 1.2·(0.6·z0 + 0.8·z1) − 1.6 (about 12%): the two share z0. The detector and the
auditor are trained on its images against the scene's ground truth, from different seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from examples.own_generator.models import HERE, PARAMS, Z_DIM, Auditor, Detector, SpriteGenerator, truth


def target_params(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    p = z @ a  # [N, 12]: colours, position, size, mouth from random mixtures of z
    p[:, 9] = 1.6 * z[:, 0] - 2.4
    p[:, 10] = 1.2 * (0.6 * z[:, 0] + 0.8 * z[:, 1]) - 1.6
    return p


def train_generator(steps: int = 600) -> SpriteGenerator:
    torch.manual_seed(0)
    g = SpriteGenerator()
    a = torch.randn(Z_DIM, PARAMS, generator=torch.Generator().manual_seed(1)) * 0.6
    opt = torch.optim.Adam(g.mlp.parameters(), lr=3e-3)
    for _ in range(steps):
        z = torch.randn(256, Z_DIM)
        loss = F.mse_loss(g.params(z), target_params(z, a))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"generator: parameter MSE {loss.item():.4f}")
    return g.eval()


def train_detector(net: nn.Module, g: SpriteGenerator, seed: int, steps: int = 600) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        z = torch.randn(128, Z_DIM)
        z[:64, 0] = 1.5 + 0.5 * torch.randn(64)  # half the batch near the eyeglasses boundary
        with torch.no_grad():
            x, y = g(z), truth(g, z)
        out = net(x + 0.02 * torch.randn_like(x))
        loss = sum(F.binary_cross_entropy_with_logits(out[k], y[k]) for k in y)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    z = torch.randn(4096, Z_DIM, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        out, y = net.eval()(g(z)), truth(g, z)
    acc = {k: round(float(((out[k] > 0).float() == y[k]).float().mean()), 4) for k in y}
    print(f"{type(net).__name__}: held-out accuracy {acc}")
    return net


def main() -> None:
    g = train_generator()
    save_file(g.state_dict(), str(HERE / "generator.safetensors"))
    for net, name, seed in ((Detector(), "detector", 1), (Auditor(), "auditor", 2)):
        save_file(train_detector(net, g, seed).state_dict(), str(HERE / f"{name}.safetensors"))


if __name__ == "__main__":
    main()
