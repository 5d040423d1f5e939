"""``unlearn-cli``: the composition root above ``unlearn``, ``export`` and ``serve``."""

from __future__ import annotations

from feature_unlearn.cli.app import app, main

__all__ = ["app", "main"]
