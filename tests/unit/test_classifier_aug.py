"""Classifier training against generator artefacts: the degradations, soft targets, agreement."""

from __future__ import annotations

import dataclasses

import torch

from feature_unlearn.unlearn.data.augment import AugmentConfig, augment, blur, shift
from feature_unlearn.unlearn.data.base import EXCLUSION_BAND, ImageSet
from feature_unlearn.unlearn.metrics import agreement
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig
from feature_unlearn.unlearn.pretrain.classifier import classifier_loss
from feature_unlearn.unlearn.pretrain.recipes import RECIPES

CLEAN = AugmentConfig(shift=0.0)
STRONG = AugmentConfig(shift=3.0, blur=1.2, noise=0.1, cast=0.15, contrast=0.2, p=1.0)


def _images(n: int = 16, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_no_degradation_is_the_identity_and_the_range_holds() -> None:
    x = _images()
    assert torch.equal(augment(x, CLEAN, torch.Generator().manual_seed(0)), x)
    y = augment(x, STRONG, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    x = _images()
    a = augment(x, STRONG, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, STRONG, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment(x, STRONG, torch.Generator().manual_seed(4)))


def test_integer_shift_moves_pixels_and_replicates_the_border() -> None:
    x = _images(4)
    y = shift(x, torch.tensor([[2.0, 0.0]] * 4))
    assert torch.allclose(y[..., 2:], x[..., :-2], atol=1e-5)
    assert torch.allclose(y[..., 0], x[..., 0], atol=1e-5)  # the left border is repeated, not wrapped
    z = shift(x, torch.tensor([[0.0, -1.0]] * 4))
    assert torch.allclose(z[..., :-1, :], x[..., 1:, :], atol=1e-5)


def test_blur_is_per_image_and_removes_high_frequencies() -> None:
    x = _images(3)
    y = blur(x, torch.tensor([0.0, 0.6, 1.2]))
    assert torch.allclose(y[0], x[0], atol=1e-6)  # sigma 0 leaves the image unchanged
    rough = [(img[..., 1:] - img[..., :-1]).abs().mean().item() for img in (x[1], y[1], y[2])]
    assert rough[0] > rough[1] > rough[2]
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)  # blur keeps the colour


def test_probability_zero_applies_only_the_shift() -> None:
    x = _images()
    only_shift = dataclasses.replace(STRONG, p=0.0)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    pixels = (torch.rand(len(x), 2, generator=gen_b) * 2 - 1) * STRONG.shift
    assert torch.allclose(augment(x, only_shift, gen_a), shift(x, pixels).clamp(-1, 1), atol=1e-6)


def test_colour_cast_moves_channels_independently() -> None:
    x = torch.zeros(256, 3, 32, 32)
    y = augment(x, AugmentConfig(shift=0.0, cast=0.2, p=1.0), torch.Generator().manual_seed(0))
    offsets = y.mean(dim=(2, 3))
    assert offsets.abs().max() <= 0.2 + 1e-6 and offsets.std(0).min() > 0.05
    assert (offsets[:, 0] - offsets[:, 1]).abs().mean() > 0.03  # a cast, not a brightness change


def test_labeller_and_auditor_recipes_stay_independent() -> None:
    for dataset in ("mnist", "faces"):
        lab, aud = RECIPES[f"{dataset}-labeller"].train, RECIPES[f"{dataset}-auditor"].train
        assert lab.augment is not None and aud.augment is not None
        assert lab.augment != aud.augment and lab.seed != aud.seed


def test_a_score_is_a_soft_target() -> None:
    torch.manual_seed(0)
    model = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads={"thick": 2}, width=4)).eval()
    torch.nn.init.constant_(model.heads["thick"].bias, 2.0)  # a confident logit, so targets matter
    x, y = torch.zeros(2, 1, 32, 32), {"thick": torch.tensor([1, 1])}
    hard = classifier_loss(model, x, y)
    near = classifier_loss(model, x, y, {"thick": torch.tensor([0.1, 0.1])})  # just over the threshold
    far = classifier_loss(model, x, y, {"thick": torch.tensor([50.0, 50.0])})
    assert torch.allclose(far, hard, atol=1e-5) and not torch.allclose(near, hard)


def test_scores_follow_subsets() -> None:
    scores = torch.linspace(-2, 2, 10)
    data = ImageSet("toy", torch.zeros(10, 1, 2, 2), {"a": (scores >= 0).long()}, {"a": 2}, {"a": scores})
    part = data.without("a")  # the images under the threshold, less the band just under it
    assert torch.equal(part.scores["a"], scores[scores < -EXCLUSION_BAND]) and len(part) == 2


def test_agreement_per_binary_attribute() -> None:
    heads = {"digit": 10, "eight": 2, "thick": 2}
    torch.manual_seed(0)
    a = AttributeClassifier(ClassifierConfig(kind="cnn", channels=1, heads=heads, width=4)).eval()
    b = AttributeClassifier(ClassifierConfig(kind="resnet", channels=1, heads=heads, width=8)).eval()
    x = _images(64, c=1)
    assert agreement(a, a, x) == {"eight": 1.0, "thick": 1.0}  # K-way heads are not compared
    pa, pb = a.predict(x), b.predict(x)
    expected = float((pa["thick"] == pb["thick"]).float().mean())
    assert agreement(a, b, x)["thick"] == expected
