"""``unlearn-cli pretrain``: train a generator or classifier from scratch (the zoo's recipes by default)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from feature_unlearn.cli.options import THREADS, config_command, set_threads
from feature_unlearn.unlearn.pretrain.request import PretrainRequest


def run(req: PretrainRequest, threads: Optional[int]) -> None:
    from feature_unlearn.unlearn.pretrain.run import pretrain

    set_threads(threads)
    typer.echo(json.dumps(pretrain(req.resolve()), indent=2))


def register(app: typer.Typer) -> None:
    config_command(app, "pretrain", PretrainRequest, run, __doc__.split(": ", 1)[1], extra=(THREADS,))
