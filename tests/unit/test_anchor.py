"""fit --keep-weight: the kept-attribute anchor's KL and its pull on g."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, kl_divergence

from feature_unlearn.unlearn.fit.anchor import KeptAnchor
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig

HEADS = {"digit": 10, "eight": 2, "thick": 2}


def _labeller() -> AttributeClassifier:
    torch.manual_seed(0)
    labeller = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads=HEADS, width=4)).eval()
    with torch.no_grad():  # an untrained network reads every image alike: sharpen its heads
        for head in labeller.heads.values():
            head.weight.mul_(300)
    return labeller


def test_the_anchor_is_the_kl_from_f_s_reading_to_g_s_on_each_kept_head() -> None:
    labeller = _labeller()
    anchor = KeptAnchor(labeller, ("digit", "eight"), 1.0)
    x_ref, x_g = torch.rand(6, 1, 32, 32) * 2 - 1, torch.rand(6, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        ref, out = labeller(x_ref), labeller(x_g)
    want = kl_divergence(Categorical(logits=ref["digit"]), Categorical(logits=out["digit"]))
    want = want + kl_divergence(Bernoulli(logits=ref["eight"]), Bernoulli(logits=out["eight"]))
    torch.testing.assert_close(anchor.per_row(x_g, x_ref), want, rtol=1e-4, atol=1e-6)
    assert float(anchor.per_row(x_ref, x_ref).abs().max()) < 1e-6  # thick is not kept: no term for it


def test_the_anchor_moves_g_s_image_and_never_the_labeller() -> None:
    labeller = _labeller()
    before = {k: v.clone() for k, v in labeller.state_dict().items()}
    anchor = KeptAnchor(labeller, ("digit",), 1.0)
    x_ref = -torch.ones(4, 1, 32, 32)  # blank
    x_g = torch.rand(4, 1, 32, 32).requires_grad_(True)  # bright noise
    opt = torch.optim.Adam([x_g], lr=0.05)
    start = float(anchor.per_row(x_g, x_ref).sum())
    assert start > 0.05, start
    for _ in range(30):
        opt.zero_grad()
        anchor.per_row(x_g, x_ref).sum().backward()
        opt.step()
    assert float(anchor.per_row(x_g, x_ref).sum()) < 0.2 * start, start
    assert all(p.grad is None for p in labeller.parameters())
    assert all(torch.equal(before[k], v) for k, v in labeller.state_dict().items())


def test_an_anchor_on_an_attribute_the_labeller_lacks_is_refused() -> None:
    with pytest.raises(AssertionError, match="smiling"):
        KeptAnchor(_labeller(), ("smiling",), 1.0)


def test_the_trainer_adds_the_weighted_anchor_to_the_paper_s_loss() -> None:
    from feature_unlearn.unlearn.device import resolve_runtime
    from feature_unlearn.unlearn.fit.distributed import Dist
    from feature_unlearn.unlearn.fit.loop import Trainer
    from feature_unlearn.unlearn.fit.loss import UnlearnLoss
    from feature_unlearn.unlearn.fit.sampler import LatentPool
    from feature_unlearn.unlearn.guard import LatentGuard
    from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator

    torch.manual_seed(0)
    f = DCGANGenerator(DCGANConfig(z_dim=8, ngf=4, channels=1)).eval().requires_grad_(False)
    g = DCGANGenerator(DCGANConfig(z_dim=8, ngf=4, channels=1)).eval()  # not f's weights: the anchor is > 0
    guard, rt = LatentGuard(torch.eye(8)[0], 0.5, mode="shift"), resolve_runtime("cpu")
    parts = {}
    for weight in (0.0, 10.0):
        opt = torch.optim.SGD(g.parameters(), lr=0.0)
        trainer = Trainer(f, g, g, guard, UnlearnLoss(1.0), opt, rt.grad_scaler(), rt, Dist())
        trainer.anchor = KeptAnchor(_labeller(), ("digit",), weight)
        parts[weight] = trainer.step(LatentPool(guard, 256, seed=0, round_index=0), 0, 8, 0.5, 0.0)
    paper = parts[0.0]["recon"] + parts[0.0]["unlearn"] + parts[0.0]["percep"]
    assert parts[10.0]["anchor"] == pytest.approx(parts[0.0]["anchor"]) and parts[0.0]["anchor"] > 1e-4
    assert parts[0.0]["loss"] == pytest.approx(paper, rel=1e-5)
    assert parts[10.0]["loss"] == pytest.approx(paper + 10 * parts[0.0]["anchor"], rel=1e-5)
    # only the non-target rows are anchored: the targets' references f(ẑ) are other images
    pool = LatentPool(guard, 256, seed=0, round_index=0)
    z, s = pool.batch(0, 8, 0.5)
    seen: list[torch.Tensor] = []

    class Recording(KeptAnchor):
        def per_row(self, x_g: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
            seen.append(x_ref)
            return super().per_row(x_g, x_ref)

    trainer.anchor = Recording(_labeller(), ("digit",), 1.0)
    trainer.step(pool, 0, 8, 0.5, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(seen[0], f(z[~s]))
    assert 0 < int(s.sum()) < 8
