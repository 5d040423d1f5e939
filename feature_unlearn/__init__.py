"""feature-unlearn: remove a feature from a pre-trained GAN generator or VAE decoder.

One namespace, one part per design-card folder:

- ``feature_unlearn.unlearn``: data, models, target vector, fit, evaluation (needs torch);
- ``feature_unlearn.export``: guarded ONNX, fp16, TensorRT, Triton (needs torch and onnx);
- ``feature_unlearn.serve``: the torch-free runtime and HTTP service (also shipped alone as the
  ``feature-unlearn-runtime`` distribution);
- ``feature_unlearn.cli``: ``unlearn-cli``, the composition root above the three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from torch import nn


def load_generator(name_or_path: Any, trust_code: bool = False) -> nn.Module:
    """An eval-mode generator from a zoo name, a checkpoint path, or a fit run directory.

    Checkpoints are data: one whose architecture names code (``module:factory``) is refused
    unless ``trust_code=True``.
    """
    from feature_unlearn.unlearn.zoo import load_generator as _load

    return _load(name_or_path, trust_code)


__all__ = ["__version__", "load_generator"]
