"""The known-answer self-test an artifact must pass before it serves a single image.

The manifest's ``self_test`` holds probe latents and what PyTorch produced for them at export in
every guard mode: random latents (they pin the weights), and for each direction k latents just
below and above t_k and far above it (they pin the threshold and tell shift from flag from off).
At load the runtime runs the probes through the graph and finds which mode the graph behaves as.
It refuses the artifact unless that is the manifest's mode, the scores are PyTorch's and the
probes bracket the manifest's thresholds; what it then reports comes from this check, never
from the manifest alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from feature_unlearn.serve.manifest import Manifest, SelfTest, thumbnail

Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]  # z -> (image, flagged, score)
EPS32 = float(np.finfo(np.float32).eps)
SCORE_ATOL = 1e-4
SCORE_ULPS = 64  # float32 rounding of z·û grows with ‖z‖; providers sum in different orders


class SelfTestError(ValueError):
    """The graph does not behave as its manifest says."""


@dataclass(frozen=True)
class VerifiedGuard:
    """The guard as the self-test observed it."""

    mode: str
    direction: Optional[tuple[tuple[float, ...], ...]]  # û_k: the graph's scores are p(z) along these rows
    threshold: Optional[tuple[float, ...]]  # t_k, each confirmed within ± precision_k
    precision: Optional[tuple[float, ...]]
    shift: Optional[tuple[tuple[float, ...], ...]] = None  # v_k; the shifted self-test images confirm it
    keep: tuple[str, ...] = ()
    margin: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "direction": self.direction,
            "threshold": self.threshold,
            "threshold_precision": self.precision,
            "shift": self.shift,
            "keep": list(self.keep),
            "margin": self.margin,
            "verified": True,
        }


def _check_scores(score: np.ndarray, st: SelfTest, z: np.ndarray, where: str) -> None:
    want = np.asarray(st.score, dtype=np.float64)
    err = np.abs(score.astype(np.float64) - want)
    allowed = SCORE_ATOL + SCORE_ULPS * EPS32 * np.linalg.norm(z.astype(np.float64), axis=1)
    if (err > allowed).any():
        i = int(np.argmax(err - allowed))
        raise SelfTestError(
            f"{where}: the guard's score of self-test probe {i} ({st.cases[i]}) is {float(score[i]):.6g}, "
            f"export measured {want[i]:.6g}: the guard direction in the graph is not the manifest's"
        )


def _matching_modes(image: np.ndarray, flagged: np.ndarray, st: SelfTest) -> tuple[list[str], float]:
    """Modes whose known flags and thumbnails the graph reproduces; and the best mode's worst block error."""
    thumbs = thumbnail(image, st.grid)
    modes, best = [], float("inf")
    for mode, want_flags in st.flagged.items():
        err = float(np.abs(thumbs - np.asarray(st.thumbs[mode])).max())
        if np.array_equal(flagged.astype(bool), np.asarray(want_flags, dtype=bool)):
            best = min(best, err)
            if err <= st.thumb_tolerance:
                modes.append(mode)
    return modes, best


def _check_brackets(m: Manifest, z: np.ndarray, where: str) -> Optional[tuple[float, ...]]:
    """The below/above probes sit at t_k ∓ delta along û_k of *this* manifest: returns each t_k's precision."""
    if m.guard.direction is None or m.guard.threshold is None:
        return None
    u = np.asarray(m.guard.direction, dtype=np.float64)
    t = np.asarray(m.guard.threshold, dtype=np.float64)
    st, precision = m.self_test, []
    for k in range(len(t)):
        d = st.delta * max(1.0, abs(t[k]))
        for side, sign in (("below", -1.0), ("above", 1.0)):
            rows = [i for i, c in enumerate(st.cases) if c == f"{side}-{k}"]
            p = z[rows].astype(np.float64) @ u[k]
            if not rows or (np.abs(p - (t[k] + sign * d)) > d / 4).any():
                raise SelfTestError(f"{where}: the self-test probes do not bracket guard.threshold[{k}] = {t[k]:.6g}")
        precision.append(d)
    return tuple(precision)


def verify(run: Run, m: Manifest, where: str) -> VerifiedGuard:
    """Replay the self-test through ``run``; the verified guard, or a SelfTestError naming what differs."""
    st = m.self_test
    z = st.z()
    image, flagged, score = run(z)
    _check_scores(score, st, z, where)
    modes, worst = _matching_modes(image, flagged, st)
    if not modes:
        raise SelfTestError(
            f"{where}: the graph reproduces none of its self-test answers (closest: images off by {worst:.1f} grey "
            f"levels, allowed {st.thumb_tolerance:g}): its weights or guard were changed after export"
        )
    if m.guard.mode not in modes:
        raise SelfTestError(
            f"{where}: the graph behaves as guard mode {modes[0]!r}, but the manifest says {m.guard.mode!r}"
        )
    precision = _check_brackets(m, z, where)
    g = m.guard
    return VerifiedGuard(g.mode, g.direction, g.threshold, precision, g.shift, g.keep, g.margin)
