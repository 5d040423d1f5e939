"""feature-unlearn: remove a feature from a pre-trained GAN generator or VAE decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def load_generator(name_or_path: Any, trust_code: bool = False) -> nn.Module:
    """An eval-mode generator from a zoo name, a checkpoint path, or a fit run directory.

    Checkpoints are data: one whose architecture names code (``module:factory``) is refused
    unless ``trust_code=True``.
    """
    from unlearn.zoo import load_generator as _load

    return _load(name_or_path, trust_code)


__all__ = ["__version__", "load_generator"]
