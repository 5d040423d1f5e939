"""``unlearn-cli collect``: sample latents, generate and label them (labeller, or a person's contact sheets)."""

from __future__ import annotations

import json

import typer

from feature_unlearn.cli.options import config_command
from feature_unlearn.unlearn.configs import CollectConfig


def run(cfg: CollectConfig) -> None:
    from feature_unlearn.unlearn.collect import run_collect

    typer.echo(json.dumps(run_collect(cfg), indent=2))


def register(app: typer.Typer) -> None:
    config_command(app, "collect", CollectConfig, run, __doc__.split(": ", 1)[1])
