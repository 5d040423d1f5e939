"""Typed export errors: all are ``UserError``s, so the CLI prints one line and exits 2."""

from __future__ import annotations

from feature_unlearn.unlearn.errors import ConfigError, UserError


class ExportError(UserError):
    """The model could not be turned into a valid ONNX graph."""


class ExportValidationError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond the spec's tolerances; the message says where and by how much."""


class TensorRTUnavailableError(ConfigError):
    """``--tensorrt`` was asked for on a machine without CUDA or the tensorrt package."""
