"""Binomial intervals for the rates we report (torch-free: the bench's records read them too).

An attack success or a residual rate is k of n trials; a figure judged against the oracle's is a
difference of two such rates. At 128 attack starts one start is 0.8 points, so a gap of 1-2 points
to the oracle is within noise unless its interval says otherwise.
"""

from __future__ import annotations

import math

Z = 1.959964  # 95% two-sided normal quantile


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a binomial proportion k/n."""
    p, denom = k / n, 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def gap_interval(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float]:
    """95% interval of p1 − p2 for two independent rates measured on n1 and n2 trials.

    Newcombe's hybrid score method (1998, method 10): each rate's Wilson interval, combined; unlike
    the normal approximation it stays sensible at rates near 0, where most of our oracles sit.
    """
    l1, u1 = wilson(round(p1 * n1), n1)
    l2, u2 = wilson(round(p2 * n2), n2)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)
