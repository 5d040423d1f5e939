"""The declarative export contract: names, shapes, opset, validation tolerances.

One frozen ``ExportSpec`` (in the spirit of Hugging Face optimum's ``OnnxConfig``) says what
the exported graph looks like and how close ONNX Runtime must stay to PyTorch. Everything
else (the exporter, the validator, the Triton config, the manifest) reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Opset 18: the newest opset every runtime we target handles (ONNX Runtime >= 1.14, TensorRT 10+,
# Triton's onnxruntime backend); the dynamo exporter emits it natively (no version conversion).
OPSET = 18
MANIFEST_FORMAT = 1
GUARD_MODES = ("shift", "flag", "off")


@dataclass(frozen=True)
class ExportSpec:
    """What the exported graph is, and the tolerances its validation enforces."""

    input_name: str = "z"
    output_names: tuple[str, str, str] = ("image", "flagged", "score")
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
    score_atol: float = 1e-4
    score_rtol: float = 1e-6  # large norms: |p| ~ 1e3 leaves fp32 matmuls a few ulps apart
    flag_band: float = 1e-5  # |p - t| <= band * max(1, |p|): too close to call, flags may differ
    # fp16 generators on ONNX Runtime's CPU kernels (measured: max 3, mean 0.06 grey levels on a
    # 32x32 DCGAN); the guard stays fp32 so flags and scores keep the fp32 tolerances.
    fp16_image_atol: int = 8
    fp16_image_mean: float = 0.5
    # Large norms push fp16 activations where one ulp moves a pixel across tanh's slope: isolated pixels
    # differ a lot, the image as a whole does not (zoo mnist-vae, fp16 on ORT CPU vs fp32: x10 max 3,
    # x100 max 26, x1000 max 126 grey levels, mean <= 0.03 in all). For fp16 those cases enforce the
    # mean (fp16_image_mean) and the guard's outputs (fp32 tolerances), not a per-pixel maximum.
    fp16_large_norm_image_atol: int = 255
    seed: int = 0
    # TensorRT optimisation profile (min, opt, max batch) and Triton batching
    trt_profile: tuple[int, int, int] = (1, 64, 256)
    triton_max_batch: int = 256
    triton_preferred_batches: tuple[int, ...] = (64, 256)
    triton_queue_delay_us: int = 500

    @property
    def names(self) -> tuple[str, ...]:
        return (self.input_name, *self.output_names)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: self.batch_axis} for name in self.names}


DEFAULT_SPEC = ExportSpec()


@dataclass(frozen=True)
class ExportConfig:
    """One ``unlearn-cli export`` invocation."""

    source: str  # zoo id, fit run directory, or checkpoint path
    out: Path
    guard: Optional[str] = None  # None: shift for a run with a target vector, off otherwise
    fp16: bool = False
    tensorrt: bool = False
    triton: Optional[Path] = None  # model repository root
    triton_name: Optional[str] = None  # default: derived from the source
    force: bool = False
    spec: ExportSpec = field(default_factory=ExportSpec)
