"""Known answers for the runtime's self-test, computed by the PyTorch reference at export.

Probes: a few random latents (they pin the weights) and, for each guard direction k, latents at
t_k − δ, t_k + δ and t_k + FAR along û_k (they pin the threshold and separate the modes). For
each guard mode the generator can be exported in, the expected flags and image thumbnails
come from the same ``LatentGuard`` the fit used (``export.module.build_module``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.module import build_module
from feature_unlearn.export.precision import REDUCED
from feature_unlearn.export.source import Source
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.serve.manifest import GUARD_MODES, SelfTest, thumbnail
from feature_unlearn.unlearn.artifacts import GuardRecord

RANDOM_PROBES = 4
DELTA = 1e-3  # below/above probes: t_k ∓ DELTA·max(1, |t_k|); float32 error of p(z) is ~1e-6 here
FAR = 3.0  # far probes: three prior standard deviations past t_k, where shift and flag images differ
GRID = 16  # thumbnails: 16 x 16 block means per channel (2 x 2 pixels at 32 x 32: sensitive, still stable)
MODE_MARGIN = 2.0  # shift and flag answers must differ by tolerance + this, so one never passes as the other
THUMB_TOLERANCE = {"fp32": 1.5, "fp16": 3.0, "bf16": 3.0, "int8": 3.0}  # grey levels per block mean, floors
# bf16 and int8: the artifact's own error on the probes, times this, plus one grey level (int8 rounding
# differs a little between CPUs with and without VNNI; bf16 between oneDNN kernels)
MEASURED_HEADROOM = 1.5


def probes(vector: GuardRecord | None, z_dim: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Probe latents [P, z_dim] float32 and what each one is."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal((RANDOM_PROBES, z_dim))]
    cases = ["random"] * RANDOM_PROBES
    if vector is not None:
        u, t = np.asarray(vector.direction, dtype=np.float64), np.asarray(vector.threshold, dtype=np.float64)
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        for k in range(len(t)):
            d = DELTA * max(1.0, abs(t[k]))
            for name, offset in (("below", -d), ("above", d), ("far", FAR)):
                b = rng.standard_normal(z_dim)
                rows.append((b - (b @ u[k] - (t[k] + offset)) * u[k])[None])
                cases.append(f"{name}-{k}")
    return np.concatenate(rows).astype(np.float32), cases


@torch.no_grad()
def _answers(module: nn.Module, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image, flagged, score = module(torch.from_numpy(z))
    return image.numpy(), flagged.numpy(), score.numpy()


def selftest_tolerance(
    run: Callable[[np.ndarray], list[np.ndarray]],
    source: Source,
    z_dim: int,
    mode: str,
    precision: str,
    spec: ExportSpec,
) -> float:
    """Thumbnail tolerance: the precision's floor, or for bf16/int8 what the artifact itself measures, with headroom."""
    floor = THUMB_TOLERANCE[precision]
    if precision not in REDUCED:
        return floor
    z, _ = probes(source.guard, z_dim, spec.seed + 1)
    want = _answers(build_module(source.generator, source.guard, mode), z)[0]
    err = float(np.abs(thumbnail(run(z)[0], GRID) - thumbnail(want, GRID)).max())
    return max(floor, round(MEASURED_HEADROOM * err + 1.0, 2))


def build_self_test(
    generator: nn.Module,
    vector: GuardRecord | None,
    z_dim: int,
    precision: str,
    spec: ExportSpec,
    tolerance: float | None = None,
) -> SelfTest:
    """The self-test block of the manifest (fp32 PyTorch answers for every mode the artifact could claim)."""
    z, cases = probes(vector, z_dim, spec.seed + 1)
    modes = GUARD_MODES if vector is not None else ("off",)
    flagged, thumbs, score = {}, {}, np.zeros(len(z))
    for mode in modes:
        image, flags, score = _answers(build_module(generator, vector, mode), z)
        flagged[mode] = tuple(bool(f) for f in flags)
        thumbs[mode] = tuple(tuple(float(round(v, 4)) for v in row) for row in thumbnail(image, GRID))
    tol = THUMB_TOLERANCE[precision] if tolerance is None else tolerance
    if vector is not None:
        gap = np.abs(np.asarray(thumbs["shift"]) - np.asarray(thumbs["flag"])).max()
        if gap < tol + MODE_MARGIN:
            raise ExportError(
                f"the self-test cannot tell guard mode shift from flag on this generator (images differ by {gap:.2f} "
                f"grey levels {FAR:g} standard deviations past the threshold; at least {tol + MODE_MARGIN:g} needed)"
            )
    return SelfTest(
        latents=tuple(tuple(float(v) for v in row) for row in z),
        cases=tuple(cases),
        score=tuple(float(s) for s in score),
        flagged=flagged,
        thumbs=thumbs,
        grid=GRID,
        thumb_tolerance=tol,
        delta=DELTA,
    )
