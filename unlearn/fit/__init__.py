"""The unlearning fit (Moon, Cho & Kim, 2024): config, loss, latent sampler, loop, report."""

from feature_unlearn.unlearn.fit.config import FitConfig

__all__ = ["FitConfig"]
