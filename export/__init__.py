"""Export a generator behind its latent guard: ONNX (fp32/fp16), TensorRT, Triton; validated before publishing.

``export`` imports ``unlearn``; ``unlearn`` never imports ``export`` (the CLI's ``export``
command imports it lazily), and the runtime in ``serve/`` imports neither.
"""

from __future__ import annotations

from feature_unlearn.export.api import export_model
from feature_unlearn.export.errors import ExportError, ExportValidationError, TensorRTUnavailableError
from feature_unlearn.export.spec import DEFAULT_SPEC, OPSET, ExportConfig, ExportSpec

__all__ = [
    "DEFAULT_SPEC", "OPSET", "ExportConfig", "ExportError", "ExportSpec", "ExportValidationError",
    "TensorRTUnavailableError", "export_model",
]  # fmt: skip
