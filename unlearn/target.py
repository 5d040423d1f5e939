"""Target vector and detector: z_e, the score p(z) = z·û and the threshold t.

Directions: ``mean`` (the paper: z_e = mean(z_pos) − mean(z_neg)), ``logreg`` (normal of a
logistic-regression separator, as FAST's SVM variant uses a separator normal).
Thresholds: ``pooled`` (the paper: mean projection of all samples), ``midpoint`` (between
the two class means), ``recall`` (the largest t that keeps recall ≥ a target on the
collected set), ``f1`` (maximises F1 on the collected set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from feature_unlearn.unlearn.errors import DataError

DIRECTIONS = ("mean", "logreg")
THRESHOLDS = ("pooled", "midpoint", "recall", "f1")


@dataclass(frozen=True)
class Detector:
    direction: torch.Tensor  # û [z_dim], unit
    threshold: float  # t
    z_e_norm: float  # ‖z_e‖ before normalisation (mean direction) or of the separator normal
    precision: float
    recall: float
    flagged: float  # share of collected latents with p > t

    def as_dict(self) -> dict[str, object]:
        return {
            "direction": self.direction.tolist(),
            "threshold": self.threshold,
            "z_e_norm": self.z_e_norm,
            "precision": self.precision,
            "recall": self.recall,
            "flagged": self.flagged,
        }


def check_labels(y: torch.Tensor, what: str = "collected labels") -> None:
    n_pos = int(y.sum())
    if n_pos == 0:
        raise DataError(
            f"{what}: no positives (nothing shows the feature); collect more samples (--n) or check the labels"
        )
    if n_pos == len(y):
        raise DataError(f"{what}: no negatives (every sample shows the feature)")


def direction(z: torch.Tensor, y: torch.Tensor, method: str = "mean") -> tuple[torch.Tensor, float]:
    """Unit direction û [z_dim] pointing towards the feature, and the raw vector's norm."""
    check_labels(y)
    pos, neg = z[y == 1], z[y == 0]
    if method == "mean":
        z_e = pos.mean(0) - neg.mean(0)
    elif method == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        clf.fit(z.double().numpy(), y.numpy())
        z_e = torch.from_numpy(clf.coef_[0]).float()
    else:
        raise DataError(f"--direction {method!r}: choose from {', '.join(DIRECTIONS)}")
    norm = float(z_e.norm())
    return z_e / norm, norm


def threshold(p: torch.Tensor, y: torch.Tensor, rule: str = "recall", target_recall: float = 0.9) -> float:
    """Threshold t on the projections p [N] for labels y [N]."""
    if rule == "pooled":
        return float(p.mean())
    if rule == "midpoint":
        return float((p[y == 1].mean() + p[y == 0].mean()) / 2)
    pos = np.sort(p[y == 1].numpy())
    if rule == "recall":
        # Keep at least target_recall of the positives strictly above t.
        k = int(np.floor((1.0 - target_recall) * len(pos)))
        return float(np.nextafter(pos[k], -np.inf))
    if rule == "f1":
        cands = np.quantile(p.numpy(), np.linspace(0.5, 0.995, 200))
        f1 = [_f1(p, y, float(c)) for c in cands]
        return float(cands[int(np.argmax(f1))])
    raise DataError(f"--threshold {rule!r}: choose from {', '.join(THRESHOLDS)}")


def _f1(p: torch.Tensor, y: torch.Tensor, t: float) -> float:
    prec, rec, _ = detector_stats(p, y, t)
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def detector_stats(p: torch.Tensor, y: torch.Tensor, t: float) -> tuple[float, float, float]:
    """(precision, recall, flagged share) of the test p > t against labels y."""
    flag = p > t
    tp = int((flag & (y == 1)).sum())
    prec = tp / max(int(flag.sum()), 1)
    rec = tp / max(int((y == 1).sum()), 1)
    return prec, rec, float(flag.float().mean())


def fit_detector(
    z: torch.Tensor,
    y: torch.Tensor,
    method: str = "mean",
    rule: str = "recall",
    target_recall: float = 0.9,
    max_flagged: float | None = None,
) -> Detector:
    """Direction and threshold from collected latents z [N, z_dim] and labels y [N] (0/1).

    ``max_flagged`` raises t until at most that share of the collected latents is flagged: a
    recall target on a handful of residual positives can otherwise flag half of all latents.
    """
    u, norm = direction(z, y, method)
    p = z @ u
    t = threshold(p, y, rule, target_recall)
    if max_flagged is not None and max_flagged < 1.0:
        t = max(t, float(torch.quantile(p, 1.0 - max_flagged)))
    prec, rec, flagged = detector_stats(p, y, t)
    return Detector(u, t, norm, prec, rec, flagged)
