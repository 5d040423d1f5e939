"""Flips counted only where the auditor was sure of f's image (evaluate's "auditor sure" column)."""

from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.evaluate import SURE, _flips
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig


class _FirstPixel(AttributeClassifier):
    """A binary head whose logit is 10 × the first pixel: its certainty is set by the image."""

    def __init__(self) -> None:
        super().__init__(ClassifierConfig(kind="cnn", channels=1, heads={"a": 2}, width=4))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": 10 * x[:, 0, 0, 0]}


def _images(first: list[float]) -> torch.Tensor:
    x = torch.zeros(len(first), 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(first)
    return x


def test_a_flip_counts_as_sure_only_where_the_auditor_was_sure_of_f() -> None:
    auditor = _FirstPixel()
    assert torch.sigmoid(torch.tensor(10 * 0.5)) >= SURE > torch.sigmoid(torch.tensor(10 * 0.01))
    a = _images([-0.5, 0.01, 0.5, 0.5])  # sure, a coin toss, sure, sure
    every = torch.ones(4, dtype=torch.bool)
    seen = auditor.readings(a)

    def flips_to(b: torch.Tensor, skip: list[str], keep: torch.Tensor) -> tuple:  # type: ignore[type-arg]
        return _flips(seen, auditor.predict(b), skip, keep)

    _, flips, only_unsure = flips_to(_images([-0.5, -0.01, 0.5, 0.5]), [], every)
    assert flips == {"a": 0.25} and only_unsure["a"] == {"flips": 0.0, "share": 0.75}
    _, flips, sure_too = flips_to(_images([-0.5, -0.01, -0.5, 0.5]), [], every)
    assert flips == {"a": 0.5} and sure_too["a"]["flips"] == pytest.approx(1 / 3) and sure_too["a"]["share"] == 0.75
    assert flips_to(a, ["a"], every) == ({}, {}, {})
    # only the rows in keep count as non-target; "all" still counts every row
    everything, first_two, sure_rows = flips_to(
        _images([0.5, -0.01, -0.5, 0.5]), [], every.clone().index_fill_(0, torch.tensor([2, 3]), False)
    )
    assert everything == {"a": 0.75} and first_two == {"a": 1.0} and sure_rows["a"] == {"flips": 1.0, "share": 0.5}
