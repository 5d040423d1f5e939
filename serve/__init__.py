"""Serving without torch: ``SafeGenerator`` runs an exported guarded generator on ONNX Runtime.

Nothing in ``serve`` imports torch, ``unlearn`` or ``export`` (a test checks it).
"""

from __future__ import annotations

from feature_unlearn.serve.runtime import (
    GenerateResult,
    ModelLoadError,
    RuntimeInputError,
    SafeGenerator,
    resolve_providers,
)

__all__ = ["GenerateResult", "ModelLoadError", "RuntimeInputError", "SafeGenerator", "resolve_providers"]
