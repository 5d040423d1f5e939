"""Validation at export: ONNX Runtime against PyTorch eager on random latents and edge cases.

Cases: random latents at batch 1, a prime batch and a batch above 256; latents whose
projection sits exactly at and just around each threshold; large norms. Tolerances come from
the ``ExportSpec``. Flags are compared away from the threshold only (within ``flag_band`` of t
the two runtimes may round a projection to either side; the shift makes both images agree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.errors import ExportValidationError
from export.module import ExportModule
from export.spec import ExportSpec


def cases(module: ExportModule, spec: ExportSpec) -> dict[str, np.ndarray]:
    """name -> float32 latents [N, z_dim] (fixed seed)."""
    rng = np.random.default_rng(spec.seed)
    z_dim = module.z_dim
    out = {f"random-batch-{n}": rng.standard_normal((n, z_dim), dtype=np.float32) for n in spec.validation_batches}
    if module.has_direction:
        u, t = module.guard_arrays()
        for k in range(u.shape[0]):
            base = rng.standard_normal((spec.near_threshold_per_offset, z_dim), dtype=np.float32)
            rows = [base - ((base @ u[k]) - (t[k] + d))[:, None] * u[k] for d in spec.near_threshold]
            out[f"near-threshold-{k}"] = np.concatenate(rows).astype(np.float32)
    for s in spec.large_norm_scales:
        out[f"large-norm-x{s:g}"] = (s * rng.standard_normal((spec.large_norm_batch, z_dim))).astype(np.float32)
    return out


def session(path: Path, providers: list[str] | None = None, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session tuned for this machine (threads = cores, all graph optimisations)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


@dataclass(frozen=True)
class Tolerance:
    image_max: int
    image_mean: float
    score_atol: float
    score_rtol: float
    flag_band: float

    @classmethod
    def of(cls, spec: ExportSpec, fp16: bool, large_norm: bool = False) -> Tolerance:
        if not fp16:
            return cls(spec.image_atol, float(spec.image_atol), spec.score_atol, spec.score_rtol, spec.flag_band)
        image_max = spec.fp16_large_norm_image_atol if large_norm else spec.fp16_image_atol
        return cls(image_max, spec.fp16_image_mean, spec.score_atol, spec.score_rtol, spec.flag_band)


def _near(z: np.ndarray, module: ExportModule, band: float) -> np.ndarray:
    """Latents whose projection (float64) lies within the band of some threshold."""
    if not module.has_direction:
        return np.zeros(len(z), dtype=bool)
    u, t = module.guard_arrays()
    p = z.astype(np.float64) @ u.astype(np.float64).T  # [N, K]
    near: np.ndarray = (np.abs(p - t) <= band * np.maximum(1.0, np.abs(p))).any(axis=1)
    return near


def compare(
    name: str, got: list[np.ndarray], ref: list[np.ndarray], near: np.ndarray, tol: Tolerance
) -> tuple[dict[str, Any], list[str]]:
    """Stats for one case and the list of what exceeded the tolerance (empty when it passed)."""
    fails = [f"{name}: output {i} is {g.dtype}{list(g.shape)}, PyTorch gives {r.dtype}{list(r.shape)}"
             for i, (g, r) in enumerate(zip(got, ref, strict=True)) if g.dtype != r.dtype or g.shape != r.shape]  # fmt: skip
    if fails:
        return {}, fails
    d = np.abs(got[0].astype(np.int16) - ref[0].astype(np.int16))
    err = np.abs(got[2].astype(np.float64) - ref[2].astype(np.float64))
    excess = err - (tol.score_atol + tol.score_rtol * np.abs(ref[2]))
    flips = (got[1] != ref[1]) & ~near
    stats = {"batch": len(near), "image_max": int(d.max()), "image_mean": round(float(d.mean()), 5),
             "score_max_err": float(err.max()), "flag_mismatches": int(flips.sum()), "near_threshold": int(near.sum())}  # fmt: skip
    if d.max() > tol.image_max:
        i = int(np.unravel_index(d.argmax(), d.shape)[0])
        fails.append(f"{name}: image differs by {int(d.max())} grey levels (allowed {tol.image_max}) at sample {i}")
    if d.mean() > tol.image_mean:
        fails.append(f"{name}: images differ by {d.mean():.3f} grey levels on average (allowed {tol.image_mean})")
    if (excess > 0).any():
        i = int(excess.argmax())
        fails.append(f"{name}: score differs by {err[i]:.3g} at sample {i} (PyTorch {ref[2][i]:.6g}, ONNX Runtime {got[2][i]:.6g}; "
                     f"allowed {tol.score_atol:g} + {tol.score_rtol:g}·|score|)")  # fmt: skip
    if flips.any():
        fails.append(f"{name}: flagged differs on {int(flips.sum())} of {len(near)} latents away from the threshold "
                     f"(first at sample {int(np.argmax(flips))})")  # fmt: skip
    return stats, fails


@torch.no_grad()
def reference(module: ExportModule, z: np.ndarray) -> list[np.ndarray]:
    return [t.numpy() for t in module(torch.from_numpy(z))]


def validate(path: Path, reference_module: ExportModule, spec: ExportSpec, fp16: bool = False) -> dict[str, Any]:
    """Run every case through ONNX Runtime and PyTorch; raise ``ExportValidationError`` on any excess."""
    try:
        sess = session(path)
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, NotImplemented, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportValidationError(f"ONNX Runtime cannot load the exported graph: {first[:300]}") from None
    report: dict[str, Any] = {"provider": sess.get_providers()[0], "reference": "pytorch-eager-fp32", "cases": {}}
    failures: list[str] = []
    for name, z in cases(reference_module, spec).items():
        got = sess.run(None, {spec.input_name: z})
        tol = Tolerance.of(spec, fp16, large_norm=name.startswith("large-norm"))
        stats, fails = compare(
            name, got, reference(reference_module, z), _near(z, reference_module, tol.flag_band), tol
        )
        report["cases"][name] = stats
        failures += fails
    if failures:
        shown = "; ".join(failures[:4]) + (f"; and {len(failures) - 4} more" if len(failures) > 4 else "")
        raise ExportValidationError(f"ONNX Runtime disagrees with PyTorch: {shown}")
    return report
