"""The flips an edit of the fit's size makes when no fit made it: the reference beside evaluate's flips.

evaluate counts the auditor's labels that differ between f(z) and g(z) on non-target latents. Many
generated images sit at a class boundary, so any visible change flips some of them: on the README's
mnist fits, a latent step in a random direction, sized so that the mean image change equals the fit's,
flipped the digit on 6.7% of mnist-dcgan's non-target samples (L1 0.012) and 15.7% of mnist-vae's
(L1 0.033), where the fits flipped 5.30% and 8.96% (and the same L1 as pixel noise 0.3–1.0%). Reported beside
the flips, it tells a fit that redraws images from a boundary that any edit of that size crosses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from feature_unlearn.unlearn.metrics import generate
from feature_unlearn.unlearn.models import AttributeClassifier

SEARCH_ROWS = 512  # rows the step size is bisected on
SEARCH_STEPS = 12  # bisection steps: the radius to 2^-12 of its bracket
MAX_RADIUS = 64.0  # the bracket stops growing here; the change reached is reported beside r


def _change(f: nn.Module, z: torch.Tensor, d: torch.Tensor, x: torch.Tensor, r: float) -> float:
    return float((generate(f, z + r * d) - x).abs().mean())


def step_radius(f: nn.Module, z: torch.Tensor, d: torch.Tensor, x: torch.Tensor, l1: float) -> float:
    """The r at which mean |f(z + r·d) − x| ≈ ``l1`` (x = f(z); bisection, assuming the change grows with r)."""
    lo, hi = 0.0, 1.0
    while _change(f, z, d, x, hi) < l1 and hi < MAX_RADIUS:
        lo, hi = hi, 2 * hi
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _change(f, z, d, x, mid) < l1 else (lo, mid)
    return (lo + hi) / 2


@torch.no_grad()
def random_step_flips(
    f: nn.Module,
    auditor: AttributeClassifier,
    z: torch.Tensor,
    x: torch.Tensor,
    l1: float,
    skip: list[str],
    seed: int,
    before: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Flips of the auditor's labels between x = f(z) [N, C, H, W] and f(z + r·d), d random unit rows.

    r is bisected on the first ``SEARCH_ROWS`` rows so that the mean image change is ``l1``; returns r, the
    change reached on every row (below ``l1`` if even ``MAX_RADIUS`` did not reach it), and per attribute
    (less ``skip``) the share of rows whose label flipped. ``before``: the auditor's labels of x, if already read.
    """
    assert len(z) == len(x) and z.ndim == 2, (z.shape, x.shape)
    d = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    d = d / d.norm(dim=1, keepdim=True)
    rows = slice(0, SEARCH_ROWS)
    r = step_radius(f, z[rows], d[rows], x[rows], l1)
    moved = generate(f, z + r * d)
    before, after = auditor.predict(x) if before is None else before, auditor.predict(moved)
    flips = {k: float((before[k] != after[k]).float().mean()) for k in before if k not in skip}
    return {"radius": r, "l1": float((moved - x).abs().mean()), "flips": flips}
