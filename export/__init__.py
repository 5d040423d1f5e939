"""Export a generator behind its latent guard: ONNX (fp32, fp16, int8), a bf16 PyTorch program, TensorRT, Triton.

``export`` imports ``unlearn``; ``unlearn`` never imports ``export`` (the CLI composes them),
and the runtime in ``serve/`` imports neither. ``export_model`` (which needs torch and onnx) is
imported on first use, so reading the config does not load torch.
"""

from __future__ import annotations

from typing import Any

from feature_unlearn.export.errors import ExportError, ExportValidationError, TensorRTUnavailableError
from feature_unlearn.export.spec import DEFAULT_SPEC, OPSET, ExportConfig, ExportSpec

__all__ = [
    "DEFAULT_SPEC",
    "OPSET",
    "ExportConfig",
    "ExportError",
    "ExportSpec",
    "ExportValidationError",
    "TensorRTUnavailableError",
    "export_model",
]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from feature_unlearn.export.api import export_model

        return export_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
