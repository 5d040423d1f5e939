"""What the runtime does with an image its in-graph image check flags (``--on-flagged``).

Chosen once at load, never per request, so no caller can turn it off:

- ``resample``: a row drawn from a seed gets a fresh latent (deterministic for a seeded request:
  ``default_rng([seed, row, try])``), up to ``MAX_TRIES`` times; a row the caller sent as a latent
  cannot be redrawn and is blanked, as is a row still flagged after the last try.
- ``blank``: the flagged image is replaced by a neutral grey image.
- ``reject``: the request fails (HTTP 422); its images are blanked before anyone could see them.

Every row reports what happened: ``pass``, ``resampled``, ``blanked`` or ``rejected``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

POLICIES = ("resample", "blank", "reject")
MAX_TRIES = 8
NEUTRAL = 128  # grey level of a blanked image


@dataclass(frozen=True)
class RowSource:
    """Where a row's latent came from: a seeded (or unseeded) draw at ``index``; None means the caller's latent."""

    seed: Optional[int]
    index: int


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"--on-flagged {policy!r}: choose from {', '.join(POLICIES)}")
    return policy


def _redraw(sources: Sequence[Optional[RowSource]], rows: np.ndarray, z_dim: int, attempt: int) -> np.ndarray:
    out = np.empty((len(rows), z_dim), dtype=np.float32)
    for j, i in enumerate(rows):
        src = sources[i]
        assert src is not None
        rng = np.random.default_rng(None if src.seed is None else [src.seed, src.index, attempt])
        out[j] = rng.standard_normal(z_dim, dtype=np.float32)
    return out


def enforce(
    policy: str,
    run: Callable[[np.ndarray], list[np.ndarray]],
    z: np.ndarray,
    outputs: list[np.ndarray],
    sources: Sequence[Optional[RowSource]],
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Apply ``policy`` to one batch: (latents used [N, z_dim], outputs, actions [N] str).

    ``outputs``: the graph's (image, flagged, score, image_flagged, image_score) for ``z``; ``run``
    runs the graph on new latents. Rows are changed in place of copies, never in the caller's arrays.
    """
    z, outputs = z.copy(), [o.copy() for o in outputs]
    actions = np.full(len(z), "pass", dtype=object)
    can_redraw = np.array([s is not None for s in sources], dtype=bool)
    for attempt in range(1, MAX_TRIES + 1 if policy == "resample" else 1):
        rows = np.flatnonzero(outputs[3].astype(bool) & can_redraw)
        if len(rows) == 0:
            break
        z[rows] = _redraw(sources, rows, z.shape[1], attempt)
        for out, new in zip(outputs, run(z[rows]), strict=True):
            out[rows] = new
        actions[rows] = "resampled"
    still = outputs[3].astype(bool)
    outputs[0][still] = NEUTRAL
    actions[still] = "rejected" if policy == "reject" else "blanked"
    return z, outputs, actions
