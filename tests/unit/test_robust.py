"""--robust: the miner finds latents the labeller scores higher, behind the guard, and targets them below t."""

from __future__ import annotations

import torch

from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.fit.robust import RobustMiner
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig
from tests.helpers import make_generator


def test_translate_with_a_margin_lands_that_far_below_the_threshold() -> None:
    u = torch.tensor([[0.6, 0.8, 0.0]])
    guard = LatentGuard(u, torch.tensor([1.0]))
    z = torch.tensor([[3.0, 4.0, 1.0], [0.0, 0.0, 2.0]])  # p = 5 and p = 0
    moved = guard.translate(z, margin=0.5)
    assert torch.allclose(moved @ u[0], torch.tensor([0.5, 0.0]))  # above t - margin: onto it; below: unchanged
    assert torch.allclose(guard.translate(z) @ u[0], torch.tensor([1.0, 0.0]))  # margin 0 is the guard's shift


def test_the_miner_attacks_through_the_guard_and_targets_below_the_threshold() -> None:
    torch.manual_seed(0)
    g = make_generator("dcgan", z_dim=8)
    labeller = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads={"f": 2}, width=4)).eval()
    u = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    guard = LatentGuard(u, torch.tensor([0.3]))
    miner = RobustMiner(labeller, ["f"], AttackConfig(eps=0.5, steps=5), batch=16, margin=1.0, seed=0)
    w, w_ref = miner.mine(g, guard, step=3)
    assert w.shape == w_ref.shape == (16, 8)
    assert ((w @ u[0]) <= 0.3 + 1e-5).all()  # what g sees is already behind the guard
    assert ((w_ref @ u[0]) <= 0.3 - 1.0 + 1e-5).all()  # the target sits a margin below t
    z0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0 * 7919 + 3))
    with torch.no_grad():
        before = labeller(g(guard.translate(z0)))["f"].mean()
        after = labeller(g(w))["f"].mean()
    assert after > before  # the search found what the labeller sees more of
    again, _ = miner.mine(g, guard, step=3)
    assert torch.equal(again, w)  # seeded per step: a resumed run mines the same latents
