"""The declarative export contract: names, shapes, opset, validation tolerances.

One frozen ``ExportSpec`` (in the spirit of Hugging Face optimum's ``OnnxConfig``) says what
the exported graph looks like and how close ONNX Runtime must stay to PyTorch. Everything
else (the exporter, the validator, the Triton config, the manifest) reads it from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from feature_unlearn.unlearn.fields import opt
from feature_unlearn.unlearn.modes import MODES

GUARD_OUTPUTS = ("image", "flagged", "score")
CHECK_OUTPUTS = ("image_flagged", "image_score")  # --image-check: the distilled detector on the image

# Opset 18: the newest opset every runtime we target handles (ONNX Runtime >= 1.14, TensorRT 10+,
# Triton's onnxruntime backend); the dynamo exporter emits it natively (no version conversion).
OPSET = 18
GUARD_MODES = MODES  # the guard's modes (unlearn.guard.GuardMode); the manifest schema allows the same


@dataclass(frozen=True)
class ExportSpec:
    """What the exported graph is, and the tolerances its validation enforces."""

    input_name: str = "z"
    output_names: tuple[str, ...] = GUARD_OUTPUTS  # + CHECK_OUTPUTS with the image check
    batch_axis: str = "batch"  # dim_param of axis 0 on every input and output
    opset: int = OPSET
    trace_batch: int = 2  # >= 2: a dimension traced at 1 can be frozen
    # validation (ONNX Runtime vs PyTorch eager)
    validation_batches: tuple[int, ...] = (1, 13, 300)  # one, a prime, more than 256
    near_threshold: tuple[float, ...] = (0.0, 1e-6, -1e-6, 1e-4, -1e-4, 1e-2, -1e-2)  # offsets of p(z) from t
    near_threshold_per_offset: int = 16
    large_norm_scales: tuple[float, ...] = (10.0, 1000.0)
    large_norm_batch: int = 16
    image_atol: int = 1  # grey levels
    # The score p(z) = z·û is a float32 dot product: its rounding error scales with ‖z‖·‖û‖ (the size of
    # the partial sums), not with |p| (a large z nearly orthogonal to û has a small p and a large error).
    # So one sample's score may differ by score_atol + score_ulps·eps32·‖z‖·max_k‖û_k‖ (eps32 = 2^-23).
    # Measured on ONNX Runtime CPU vs PyTorch eager (z_dim 8-512, 1 and 4 directions, ‖z‖ up to 1e5·√z_dim,
    # batches 1/13/300): at most 1.5 such units apart, each at most 1.4 from float64. 8 leaves 5x headroom
    # for other CPUs' summation orders and still catches a guard direction rotated by ~1e-5 rad.
    score_ulps: float = 8.0
    score_atol: float = 1e-6  # floor for ‖z‖ -> 0 only; any real latent's allowance is the ulps term
    # Flags are compared only where the float64 projection is further than flag_atol + score_ulps·eps32·‖z‖·‖û_k‖
    # from every threshold: closer than that, either runtime may round p to either side of t (and the shift
    # then moves the latent by less than that, so the images still agree). flag_atol must stay well below the
    # near-threshold offsets ±1e-4, so a threshold off by more than 1e-4 (plus that band) flips compared flags.
    flag_atol: float = 1e-6
    # fp16 generators on ONNX Runtime's CPU kernels (measured: max 3, mean 0.06 grey levels on a
    # 32x32 DCGAN); the guard stays fp32 so flags and scores keep the fp32 tolerances.
    fp16_image_atol: int = 8
    fp16_image_mean: float = 0.5
    # Large norms push fp16 activations where one ulp moves a pixel across tanh's slope: isolated pixels
    # differ a lot, the image as a whole does not (zoo mnist-vae, fp16 on ORT CPU vs fp32: x10 max 3,
    # x100 max 26, x1000 max 126 grey levels, mean <= 0.03 in all). For fp16 those cases enforce the
    # mean (fp16_image_mean) and the guard's outputs (fp32 tolerances), not a per-pixel maximum.
    fp16_large_norm_image_atol: int = 255
    # The image check's logit is computed from the float image inside the graph: fp32 ORT vs PyTorch
    # differ by float rounding of ~50k multiply-adds; fp16 images move it by up to a few tenths.
    check_score_atol: float = 1e-3
    fp16_check_score_atol: float = 0.5
    # bf16 (8 mantissa bits) on PyTorch CPU vs fp32, convs in bf16 (export.mixed): measured max 3-5, mean <= 0.26
    # grey levels on the zoo (10,000 latents); the margin is for generators of other shapes
    bf16_image_atol: int = 12
    bf16_image_mean: float = 0.5
    bf16_check_score_atol: float = 1.0
    # int8 (uint8 activations per tensor) on ONNX Runtime vs fp32: measured mean 2-3 grey levels, isolated
    # pixels up to ~60 on faces-dcgan. The image gate is the mean; what the images show is gated by the
    # auditor (residual rate, FID) in export.gates.
    int8_image_atol: int = 255
    int8_image_mean: float = 4.0
    int8_check_score_atol: float = 4.0
    # quality gates for reduced precisions (export.gates): judged by the dataset's auditor
    gate_rate_pp: float = 0.2  # residual target rate within ± this many percentage points of fp32's
    gate_fid_rel: float = 0.02  # FID within ± 2% of fp32's
    seed: int = 0
    # TensorRT optimisation profile (min, opt, max batch) and Triton batching
    trt_profile: tuple[int, int, int] = (1, 64, 256)
    triton_max_batch: int = 256
    triton_preferred_batches: tuple[int, ...] = (64, 256)
    triton_queue_delay_us: int = 500

    @property
    def has_image_check(self) -> bool:
        return self.output_names[3:] == CHECK_OUTPUTS

    def with_image_check(self) -> ExportSpec:
        return dataclasses.replace(self, output_names=(*self.output_names[:3], *CHECK_OUTPUTS))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.input_name, *self.output_names)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: self.batch_axis} for name in self.names}


DEFAULT_SPEC = ExportSpec()


@dataclass(frozen=True)
class ExportConfig:
    """One ``unlearn-cli export`` invocation."""

    source: str = opt(..., "Fit run directory, zoo id (e.g. faces-dcgan) or checkpoint path.")
    out: Path = opt(..., "Output directory: model.onnx + manifest.json (refused if it exists).")
    guard: Optional[str] = opt(None, "shift, flag or off (default: shift for a fit run, off for a zoo id).")
    precision: str = opt(
        "fp32",
        "fp32; fp16 (GPUs); bf16 (runs on PyTorch: a CPU with avx512_bf16/AMX, or a GPU); int8 (ONNX Runtime, "
        "static quantization calibrated on prior latents). The guard always stays fp32.",
    )
    fp16: bool = opt(False, "Same as --precision fp16 (half-precision generator for GPUs).")
    calibration: str = opt(
        "1024", "int8: how many prior latents z ~ N(0, I) to calibrate on, or a .npy file of float32 latents."
    )
    gate_samples: int = opt(
        10_000, "Reduced precisions: latents the quality gate (auditor's residual rate, FID) is measured on."
    )
    image_check: bool = opt(
        False,
        "Also run a small detector of the removed feature on the image, in the graph (outputs image_flagged, "
        "image_score); distilled from the run's labeller once and kept in the run directory.",
    )
    tensorrt: bool = opt(
        False, "Also build DIR/model.plan (needs CUDA and tensorrt); fp16 and bf16 engines come from their own graphs."
    )
    triton: Optional[Path] = opt(None, "Also write a Triton model repository entry under this directory.")
    triton_name: Optional[str] = opt(None, "Model name in the Triton repository (default: the source's name).")
    force: bool = opt(False, "Replace an existing --out (and Triton entry).")
    trust_code: bool = opt(False, "Allow a checkpoint built by a module:factory to import and run that code.")
    spec: ExportSpec = field(default_factory=ExportSpec)
