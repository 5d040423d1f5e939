"""``unlearn-cli fit``: unlearn a feature from a pre-trained generator (Moon, Cho & Kim, 2024)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from feature_unlearn.cli.options import THREADS, config_command, set_threads
from feature_unlearn.unlearn.fit.config import FitConfig


def run(cfg: FitConfig, threads: Optional[int]) -> None:
    from feature_unlearn.unlearn.fit.run import fit

    set_threads(threads)
    metrics = fit(cfg)
    if metrics:  # other torchrun ranks return nothing
        typer.echo(json.dumps(metrics, indent=2))


def register(app: typer.Typer) -> None:
    config_command(app, "fit", FitConfig, run, __doc__.split(": ", 1)[1], extra=(THREADS,))
