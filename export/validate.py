"""Validation at export: ONNX Runtime against PyTorch eager on random latents and edge cases.

Cases: random latents at batch 1, a prime batch and a batch above 256; latents whose
projection sits exactly at and just around each threshold; large norms. Tolerances come from
the ``ExportSpec``. The score's tolerance follows float32 rounding of z·û, which grows with
‖z‖·‖û‖ per sample (see ``ExportSpec.score_ulps``). Flags are compared away from the threshold
only (within that same float32 error of t the two runtimes may round a projection to either
side; the shift then moves the latent by less than that error, so both images agree).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from feature_unlearn.export.errors import ExportValidationError
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.spec import ExportSpec


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


def session(
    graph: Path | onnx.ModelProto, providers: list[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime session tuned for this machine (threads = cores, all graph optimisations)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = graph.SerializeToString() if isinstance(graph, onnx.ModelProto) else str(graph)
    return ort.InferenceSession(model, opts, providers=providers or ["CPUExecutionProvider"])


EPS32 = float(np.finfo(np.float32).eps)  # 2^-23: one ulp of 1.0 in float32


@dataclass(frozen=True)
class Tolerance:
    image_max: int
    image_mean: float
    score_atol: float
    score_ulps: float  # in units of fp32_unit(): eps32·‖z‖·max_k‖û_k‖
    flag_atol: float
    check_atol: float  # image check's logit

    @classmethod
    def of(cls, spec: ExportSpec, fp16: bool = False, large_norm: bool = False, precision: str = "fp32") -> Tolerance:
        """The tolerances of a precision; reduced precisions halve the generator only: score and flags stay fp32."""
        precision = "fp16" if fp16 else precision
        guard = (spec.score_atol, spec.score_ulps, spec.flag_atol)
        if precision == "fp32":
            return cls(spec.image_atol, float(spec.image_atol), *guard, spec.check_score_atol)
        if precision == "fp16":
            image_max = spec.fp16_large_norm_image_atol if large_norm else spec.fp16_image_atol
            return cls(image_max, spec.fp16_image_mean, *guard, spec.fp16_check_score_atol)
        if precision == "bf16":
            image_max = spec.fp16_large_norm_image_atol if large_norm else spec.bf16_image_atol
            return cls(image_max, spec.bf16_image_mean, *guard, spec.bf16_check_score_atol)
        assert precision == "int8", precision
        # latents far outside the prior saturate the calibrated activation ranges: only the guard is compared
        image_mean = 255.0 if large_norm else spec.int8_image_mean
        check = float("inf") if large_norm else spec.int8_check_score_atol
        return cls(spec.int8_image_atol, image_mean, *guard, check)

    def score_allowed(self, unit: np.ndarray) -> np.ndarray:
        """Per-sample allowed |score difference|, given ``fp32_unit`` of each latent."""
        allowed: np.ndarray = self.score_atol + self.score_ulps * unit
        return allowed

    def describe(self) -> str:
        return f"{self.score_atol:g} + {self.score_ulps:g}·eps32·‖z‖·‖û‖"


def _u_norm(module: ExportModule) -> np.ndarray:
    """‖û_k‖ of the graph's float32 rows [K] (1 up to rounding; no direction: a placeholder 1)."""
    if not module.has_direction:
        return np.ones(1)
    u, _ = module.guard_arrays()
    norms: np.ndarray = np.linalg.norm(u.astype(np.float64), axis=1)
    return norms


def fp32_unit(z: np.ndarray, module: ExportModule) -> np.ndarray:
    """eps32·‖z‖·max_k‖û_k‖ per latent [N]: the scale of float32 rounding in z·û_k (the partial sums' size)."""
    unit: np.ndarray = EPS32 * np.linalg.norm(z.astype(np.float64), axis=1) * float(_u_norm(module).max())
    return unit


def _near(z: np.ndarray, module: ExportModule, tol: Tolerance) -> np.ndarray:
    """Latents whose float64 projection lies within float32 error of some threshold: too close to call."""
    if not module.has_direction:
        return np.zeros(len(z), dtype=bool)
    u, t = module.guard_arrays()
    z64 = z.astype(np.float64)
    p = z64 @ u.astype(np.float64).T  # [N, K], the value both float32 runtimes approximate
    scale = np.outer(np.linalg.norm(z64, axis=1), _u_norm(module))  # ‖z‖·‖û_k‖ [N, K]
    band = tol.flag_atol + tol.score_ulps * EPS32 * scale
    near: np.ndarray = np.any(np.abs(p - t.astype(np.float64)) <= band, axis=1)
    return near


def compare(
    name: str,
    got: list[np.ndarray],
    ref: list[np.ndarray],
    near: np.ndarray,
    tol: Tolerance,
    unit: np.ndarray,
    tau: float | None = None,
    jump: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """Stats for one case and the list of what exceeded the tolerance (empty when it passed).

    ``unit``: ``fp32_unit`` of each latent, the float32 error scale its score is judged by; ``tau``:
    the image check's threshold when the graph has one (outputs 4 and 5); ``jump``: the guard has a
    margin, so a latent within float32 error of t may land at t − m in one runtime and stay in the
    other: those images are not compared (their flags are not either, as without a margin).
    """
    fails = [
        f"{name}: output {i} is {g.dtype}{list(g.shape)}, PyTorch gives {r.dtype}{list(r.shape)}"
        for i, (g, r) in enumerate(zip(got, ref, strict=True))
        if g.dtype != r.dtype or g.shape != r.shape
    ]
    if fails:
        return {}, fails
    keep = ~near if jump and (~near).any() else np.ones(len(near), dtype=bool)
    d = np.abs(got[0][keep].astype(np.int16) - ref[0][keep].astype(np.int16))
    err = np.abs(got[2].astype(np.float64) - ref[2].astype(np.float64))
    excess = err - tol.score_allowed(unit)
    flips = (got[1] != ref[1]) & ~near
    stats = {
        "batch": len(near),
        "image_max": int(d.max()),
        "image_mean": round(float(d.mean()), 5),
        "score_max_err": float(err.max()),
        "score_max_ulps": round(float((err / np.maximum(unit, 1e-300)).max()), 3),
        "flag_mismatches": int(flips.sum()),
        "near_threshold": int(near.sum()),
    }
    if d.max() > tol.image_max:
        i = int(np.unravel_index(d.argmax(), d.shape)[0])
        fails.append(f"{name}: image differs by {int(d.max())} grey levels (allowed {tol.image_max}) at sample {i}")
    if d.mean() > tol.image_mean:
        fails.append(f"{name}: images differ by {d.mean():.3f} grey levels on average (allowed {tol.image_mean})")
    if (excess > 0).any():
        i = int(excess.argmax())
        fails.append(
            f"{name}: score differs by {err[i]:.3g} at sample {i} "
            f"(PyTorch {ref[2][i]:.6g}, ONNX Runtime {got[2][i]:.6g}; "
            f"allowed {tol.describe()} = {tol.score_allowed(unit[i : i + 1])[0]:.3g})"
        )
    if flips.any():
        fails.append(
            f"{name}: flagged differs on {int(flips.sum())} of {len(near)} latents away from the threshold "
            f"(first at sample {int(np.argmax(flips))})"
        )
    if tau is not None:  # the check reads the image: the same latents are skipped when there is a jump
        fails += _compare_check(name, [o[keep] for o in got[3:]], [o[keep] for o in ref[3:]], tol, tau, stats)
    return stats, fails


def _compare_check(
    name: str, got: list[np.ndarray], ref: list[np.ndarray], tol: Tolerance, tau: float, stats: dict[str, Any]
) -> list[str]:
    """The image check's logit, and its flag wherever PyTorch's logit is further than the tolerance from τ."""
    err = np.abs(got[1].astype(np.float64) - ref[1].astype(np.float64))
    flips = (got[0] != ref[0]) & (np.abs(ref[1].astype(np.float64) - tau) > tol.check_atol)
    stats |= {"image_score_max_err": float(err.max()), "image_flag_mismatches": int(flips.sum())}
    fails = []
    if err.max() > tol.check_atol:
        i = int(err.argmax())
        fails.append(f"{name}: image_score differs by {err[i]:.3g} at sample {i} (allowed {tol.check_atol:g})")
    if flips.any():
        fails.append(f"{name}: image_flagged differs on {int(flips.sum())} samples (first {int(np.argmax(flips))})")
    return fails


@torch.no_grad()
def reference(module: ExportModule, z: np.ndarray) -> list[np.ndarray]:
    return [t.numpy() for t in module(torch.from_numpy(z))]


Runner = Callable[[np.ndarray], list[np.ndarray]]  # z -> every output, in the spec's order


def onnx_runner(graph: Path | onnx.ModelProto) -> Runner:
    """A graph (file or in memory) on ONNX Runtime CPU (one it cannot load is an ``ExportValidationError``)."""
    try:
        sess = session(graph)
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, NotImplemented, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportValidationError(f"ONNX Runtime cannot load the exported graph: {first[:300]}") from None
    input_name = sess.get_inputs()[0].name
    return lambda z: list(sess.run(None, {input_name: z}))


def validate(
    target: Path | Runner,
    reference_module: ExportModule,
    spec: ExportSpec,
    fp16: bool = False,
    precision: str = "fp32",
    backend: str = "ONNX Runtime",
) -> dict[str, Any]:
    """Run every case through the artifact and PyTorch fp32; raise ``ExportValidationError`` on any excess."""
    run = onnx_runner(target) if isinstance(target, Path) else target
    precision = "fp16" if fp16 else precision
    report: dict[str, Any] = {
        "backend": backend,
        "precision": precision,
        "reference": "pytorch-eager-fp32",
        "score_tolerance": Tolerance.of(spec, precision=precision).describe(),
        "cases": {},
    }
    failures: list[str] = []
    check = reference_module.check
    tau = None if check is None else float(check.tau)
    jump = reference_module.has_direction and float(reference_module.guard.m.max()) > 0
    for name, z in cases(reference_module, spec).items():
        tol = Tolerance.of(spec, large_norm=name.startswith("large-norm"), precision=precision)
        near, unit = _near(z, reference_module, tol), fp32_unit(z, reference_module)
        stats, fails = compare(name, run(z), reference(reference_module, z), near, tol, unit, tau, jump)
        report["cases"][name] = stats
        failures += fails
    if failures:
        shown = "; ".join(failures[:4]) + (f"; and {len(failures) - 4} more" if len(failures) > 4 else "")
        raise ExportValidationError(f"{backend} ({precision}) disagrees with PyTorch fp32: {shown}")
    return report
