"""The training library: data, models, the latent guard, the target vector, the fit and its evaluation.

Imports neither ``feature_unlearn.export`` nor ``feature_unlearn.serve``: the CLI composes them.
"""

from __future__ import annotations

from feature_unlearn import __version__, load_generator

__all__ = ["__version__", "load_generator"]
