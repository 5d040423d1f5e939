"""The labeller's attribute term: its gradient moves generated shares toward the data's, and
reconstructions toward their input's reading, with the labeller itself left untouched."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from feature_unlearn.unlearn.data.augment import AugmentConfig
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig
from feature_unlearn.unlearn.pretrain.attrterm import RateMatch, ReadingMatch, soft_shares

HEADS = {"thick": 2, "digit": 3}


def _images(n: int, bright: float, seed: int) -> torch.Tensor:
    """Noise images; a share ``bright`` of them lifted by +0.6 (what the toy labeller learns to read)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 32, 32, generator=g) - 0.8
    x[: int(bright * n)] += 0.6
    return x


@functools.cache
def _labeller() -> AttributeClassifier:
    """A small CNN taught in a few steps that "thick" is a bright image (and the digit its thirds)."""
    torch.manual_seed(0)
    labeller = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads=HEADS, width=8))
    x = torch.cat([_images(128, 0.0, 1), _images(128, 1.0, 2)])
    y = torch.cat([torch.zeros(128), torch.ones(128)])
    digit = (y * 2).long()
    opt = torch.optim.Adam(labeller.parameters(), lr=3e-3)
    for _ in range(40):
        out = labeller(x)
        loss = F.binary_cross_entropy_with_logits(out["thick"], y) + F.cross_entropy(out["digit"], digit)
        opt.zero_grad()
        loss.backward()
        opt.step()
    labeller.zero_grad(set_to_none=True)
    return labeller.eval()


def _gap(labeller: AttributeClassifier, x: torch.Tensor, target: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        shares = {k: p.mean(0) for k, p in soft_shares(labeller, x).items()}
    return max(float((shares[k] - target[k]).abs().max()) for k in shares)


def test_rate_match_descends_toward_the_data_shares_and_leaves_the_labeller_alone() -> None:
    labeller = _labeller()
    before = {k: v.clone() for k, v in labeller.state_dict().items()}
    match = RateMatch(labeller, _images(256, 0.3, 3))  # the data: 30% bright
    fake = torch.nn.Parameter(_images(64, 0.0, 4))  # none bright: shares far from the data's
    start = _gap(labeller, fake, match.target)
    opt = torch.optim.Adam([fake], lr=0.005)  # slow against the running share, as a generator's steps are
    for _ in range(200):
        opt.zero_grad()
        match(fake).backward()
        opt.step()
    end = _gap(labeller, fake, match.target)
    assert start > 0.05 and end < 0.35 * start, (start, end)
    assert abs(match.worst_gap() - 100 * end) < 10  # the running share tracks the batch's
    assert all(p.grad is None for p in labeller.parameters())  # frozen: no gradient reaches it
    assert all(torch.equal(v, before[k]) for k, v in labeller.state_dict().items())


def test_rate_match_pushes_a_share_that_is_too_low_up() -> None:
    labeller = _labeller()
    match = RateMatch(labeller, _images(256, 0.3, 3))
    fake = _images(64, 0.0, 4).requires_grad_(True)
    with torch.no_grad():
        low = soft_shares(labeller, fake)["thick"].mean() < match.target["thick"]
    match(fake).backward()
    assert fake.grad is not None
    step = fake.detach() - 0.5 * fake.grad.sign()  # a descent step on the term
    with torch.no_grad():
        moved = soft_shares(labeller, step)["thick"].mean() - soft_shares(labeller, fake)["thick"].mean()
    assert bool(moved > 0) == bool(low)  # the share moves toward the target, whichever side it starts


def test_reading_match_brings_a_reconstruction_to_its_input_reading() -> None:
    labeller = _labeller()
    x = _images(32, 0.5, 5)
    recon = torch.nn.Parameter(_images(32, 0.0, 6))  # half of the inputs bright, no reconstruction bright
    term = ReadingMatch(labeller)

    def distance() -> float:
        with torch.no_grad():
            a, b = soft_shares(labeller, x), soft_shares(labeller, recon)
        return sum(float((a[k] - b[k]).abs().mean()) for k in a)

    start = distance()
    opt = torch.optim.Adam([recon], lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        term(x, recon).backward()
        opt.step()
    assert start > 0.02 and distance() < 0.35 * start, (start, distance())
    assert all(p.grad is None for p in labeller.parameters())


def test_the_generated_side_is_read_through_the_labellers_degradations() -> None:
    labeller = _labeller()
    x = _images(16, 0.5, 7).requires_grad_(True)
    clean = ReadingMatch(labeller)
    degraded = ReadingMatch(labeller, AugmentConfig(shift=2.0, blur=1.0, noise=0.06, cast=0.1, p=1.0), seed=3)
    assert torch.equal(clean(x, x), clean(x, x))  # clean: the same reading every step
    first, second = degraded(x, x), degraded(x, x)
    assert not torch.equal(first, second)  # a fresh degradation per step
    second.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # and still differentiable in the image
