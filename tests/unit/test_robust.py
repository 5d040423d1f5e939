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


def _miner(**kw: object) -> tuple[RobustMiner, torch.nn.Module, AttributeClassifier, LatentGuard]:
    torch.manual_seed(0)
    g = make_generator("dcgan", z_dim=8)
    labeller = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads={"f": 2}, width=4)).eval()
    u = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    guard = LatentGuard(u, torch.tensor([0.3]))
    sizes: dict[str, object] = {"starts": 16, "sample": 12, "capacity": 20, "max_margin": 4.0, "seed": 0} | kw
    return RobustMiner(labeller, ["f"], AttackConfig(eps=0.5, steps=5), **sizes), g, labeller, guard  # type: ignore[arg-type]


def test_the_miner_attacks_through_the_guard_and_keeps_its_hits() -> None:
    miner, g, labeller, guard = _miner()
    w = miner.mine(g, guard, step=3)
    assert ((w @ guard.u[0]) <= 0.3 + 1e-5).all()  # what g sees is already behind the guard
    with torch.no_grad():
        assert (labeller(g(miner.buffer))["f"] > 0).all()  # only hits are kept
        z0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0 * 7919 + 3))
        before = labeller(g(guard.translate(z0)))["f"].mean()
    assert len(miner.buffer) > 0 and w.shape == (12, 8)  # a sample of the buffer
    with torch.no_grad():
        assert labeller(g(w))["f"].mean() > before  # the search found what the labeller sees more of
    kept = len(miner.buffer)
    for step in range(4, 8):
        miner.mine(g, guard, step)
    assert kept < len(miner.buffer) <= 20  # hits accumulate up to the capacity
    again, _, _, _ = _miner()
    assert torch.equal(again.mine(g, guard, step=3), w)  # seeded per step: a resumed run mines the same latents


class _Projection(torch.nn.Module):
    """A toy f whose image is its latent's projection on u; a labeller whose feature fires above ``c`` and
    whose kept attribute "k" fires above ``c_keep``."""

    def __init__(self, u: torch.Tensor, c: float = 0.0, c_keep: float = -10.0) -> None:
        super().__init__()
        self.u, self.c, self.c_keep = u, c, c_keep

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.u[0]).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    def labels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = x.mean(dim=(1, 2, 3))
        return {"f": 50 * (p - self.c), "k": 50 * (p - self.c_keep)}


def _toy(c_keep: float = -10.0, max_margin: float = 3.0) -> tuple[RobustMiner, _Projection, LatentGuard]:
    u = torch.nn.functional.normalize(torch.ones(1, 8), dim=1)
    toy = _Projection(u, c=-0.6, c_keep=c_keep)  # f shows the feature down to p = -0.6: 1.6 below t
    miner = RobustMiner(toy.labels, ["f"], AttackConfig(), 4, 4, 8, max_margin, 0, ("k",))  # type: ignore[arg-type]
    return miner, toy, LatentGuard(u, torch.tensor([1.0]))


def test_targets_move_each_latent_only_as_far_below_the_threshold_as_the_feature_needs() -> None:
    miner, toy, guard = _toy()
    w = guard.translate(torch.randn(256, 8, generator=torch.Generator().manual_seed(1)) * 2)
    p_w = w @ guard.u[0]
    ref, usable = miner.targets(toy, guard, w, step=0)
    p_ref, already = ref @ guard.u[0], p_w < -0.6
    assert usable.all() and already.any() and (~already).any()
    assert torch.allclose(p_ref[already], p_w[already])  # clear already: its own target
    # the rest land on the first margin of the grid past -0.6: t − 1.75 (1.5 still shows the feature)
    assert torch.allclose(p_ref[~already], torch.full_like(p_ref[~already], 1.0 - 1.75), atol=1e-5)
    capped, _, _ = _toy(max_margin=1.2)
    ref_cap, usable_cap = capped.targets(toy, guard, w, step=0)
    assert torch.equal(usable_cap, already)  # at most 1.2 below t: -0.2 still shows the feature


def test_a_target_that_would_change_a_kept_attribute_is_left_out() -> None:
    miner, toy, guard = _toy(c_keep=-0.3)  # removing the feature (p < -0.6) also clears "k" (p > -0.3)
    w = guard.translate(torch.randn(256, 8, generator=torch.Generator().manual_seed(1)) * 2)
    p_w = w @ guard.u[0]
    _, usable = miner.targets(toy, guard, w, step=0)
    assert torch.equal(usable, p_w < -0.3)  # "k" already off, or it would be switched off
