"""``unlearn-cli export``: a generator behind its latent guard as validated ONNX (+ fp16, TensorRT, Triton)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from feature_unlearn.cli.options import THREADS, config_command, set_threads
from feature_unlearn.export.spec import ExportConfig


def run(cfg: ExportConfig, threads: Optional[int]) -> None:
    from feature_unlearn.export import export_model

    set_threads(threads)
    typer.echo(json.dumps(export_model(cfg), indent=2))


def register(app: typer.Typer) -> None:
    config_command(
        app,
        "export",
        ExportConfig,
        run,
        __doc__.split(": ", 1)[1],
        positional=("source",),
        skip=("spec",),
        extra=(THREADS,),
    )
