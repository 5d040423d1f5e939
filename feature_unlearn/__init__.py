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


def fit(**options: Any) -> dict[str, Any]:
    """``unlearn-cli fit`` from Python: the same options as keyword arguments (``FitConfig``).

    Your own generator and detector go in as factories, ``generator=make_generator`` and
    ``labeller=make_detector`` (functions importable by name), or as their names
    ``model="package.module:factory"``, ``labeller="package.module:factory"``; with ``trust_code=True``
    (and ``weights=Path(...)``). The run directory records the name, so ``evaluate`` and ``export``
    can rebuild them; a built ``nn.Module`` is refused for that reason.
    """
    from pathlib import Path

    from feature_unlearn.unlearn.byo import factory_spec
    from feature_unlearn.unlearn.fit import FitConfig
    from feature_unlearn.unlearn.fit.run import fit as _fit

    if "generator" in options:
        options["model"] = factory_spec(options.pop("generator"), "generator=")
    if callable(options.get("labeller")):
        options["labeller"] = factory_spec(options["labeller"], "labeller=")
    for key in ("out", "labels", "weights"):
        if isinstance(options.get(key), str):
            options[key] = Path(options[key])
    if isinstance(options.get("features"), str):
        options["features"] = (options["features"],)
    return _fit(FitConfig(**options))


__all__ = ["__version__", "fit", "load_generator"]
