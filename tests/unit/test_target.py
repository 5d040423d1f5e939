from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.errors import DataError
from feature_unlearn.unlearn.target import detector_stats, direction, fit_detector, threshold


def _data(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=gen)
    logit = 3 * (z[:, 0] + 0.5 * z[:, 1]) - 5 + 0.5 * torch.randn(n, generator=gen)
    return z, (logit > 0).long()


def test_mean_direction_is_the_normalised_class_mean_difference() -> None:
    z, y = _data()
    u, norm = direction(z, y, "mean")
    z_e = z[y == 1].mean(0) - z[y == 0].mean(0)
    assert torch.allclose(u, z_e / z_e.norm()) and abs(norm - float(z_e.norm())) < 1e-5
    assert u[0] > 0.8  # points to the feature


def test_logreg_direction_recovers_the_separator() -> None:
    z, y = _data()
    u, _ = direction(z, y, "logreg")
    true = torch.tensor([1.0, 0.5, 0, 0, 0, 0, 0, 0])
    assert float(u @ (true / true.norm())) > 0.97


@pytest.mark.parametrize("recall", [0.8, 0.9, 0.95])
def test_recall_threshold_keeps_the_recall(recall: float) -> None:
    z, y = _data()
    det = fit_detector(z, y, "mean", "recall", recall)
    assert det.recall >= recall
    assert det.recall < recall + 0.01  # and is the largest such threshold


def test_threshold_rules() -> None:
    z, y = _data()
    p = z @ direction(z, y)[0]
    assert threshold(p, y, "pooled") == pytest.approx(float(p.mean()))
    mid = threshold(p, y, "midpoint")
    assert float(p[y == 0].mean()) < mid < float(p[y == 1].mean())
    f1_t = threshold(p, y, "f1")
    prec_f1, rec_f1, _ = detector_stats(p, y, f1_t)
    prec_pool, rec_pool, flagged_pool = detector_stats(p, y, threshold(p, y, "pooled"))
    # The paper's pooled mean flags about half of all latents when positives are rare.
    assert 0.35 < flagged_pool < 0.65 and prec_pool < 0.3
    assert 2 * prec_f1 * rec_f1 / (prec_f1 + rec_f1) > 2 * prec_pool * rec_pool / (prec_pool + rec_pool)


def test_no_positives_or_no_negatives_is_a_data_error() -> None:
    z = torch.randn(10, 3)
    with pytest.raises(DataError, match="no positives"):
        fit_detector(z, torch.zeros(10, dtype=torch.long))
    with pytest.raises(DataError, match="no negatives"):
        fit_detector(z, torch.ones(10, dtype=torch.long))


def test_unknown_rules_name_the_flag() -> None:
    z, y = _data(200)
    with pytest.raises(DataError, match="--direction"):
        direction(z, y, "svd")
    with pytest.raises(DataError, match="--threshold"):
        threshold(z[:, 0], y, "median")


def test_max_flagged_caps_the_share_of_flagged_latents() -> None:
    z, y = _data()
    loose = fit_detector(z, y, "mean", "recall", 0.99)
    capped = fit_detector(z, y, "mean", "recall", 0.99, max_flagged=0.05)
    assert loose.flagged > 0.05 and capped.flagged <= 0.0505
    assert capped.threshold > loose.threshold and capped.precision > loose.precision


def test_a_budget_of_one_is_no_cap() -> None:
    """Runs older than --flag-budget resume at 1.0: exactly the uncapped threshold (not the lowest projection)."""
    z, y = torch.tensor([[0.0], [1.0], [2.0], [10.0]]), torch.tensor([1, 0, 0, 1])  # a positive projects lowest
    capped, loose = (
        fit_detector(z, y, "mean", "recall", 1.0, max_flagged=1.0),
        fit_detector(z, y, "mean", "recall", 1.0),
    )
    assert capped.threshold == loose.threshold and capped.flagged == loose.flagged == 1.0
