"""``unlearn-cli evaluate``: grade a fit run with the independent auditor: rates, FID, preservation, flips, attack."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from feature_unlearn.cli.options import THREADS, config_command, config_params, extra_param, set_threads
from feature_unlearn.unlearn.configs import AttackConfig, EvalConfig

PREFIX = "attack_"
ATTACK = tuple(
    p.replace(
        name=PREFIX + p.name,
        default=typer.Option(p.default.default, f"--attack-{p.name}", help=p.default.help, min=p.default.min),
    )
    for p in config_params(AttackConfig)
)
JSON = extra_param("as_json", Optional[Path], None, "--json", help="Also write the JSON here.")


def run(cfg: EvalConfig, threads: Optional[int], as_json: Optional[Path], **attack: Any) -> None:
    from feature_unlearn.unlearn.evaluate import markdown, run_evaluate

    set_threads(threads)
    attack_cfg = AttackConfig(**{k[len(PREFIX) :]: v for k, v in attack.items()})
    typer.echo(markdown(run_evaluate(dataclasses.replace(cfg, attack_cfg=attack_cfg), as_json)))


def register(app: typer.Typer) -> None:
    config_command(
        app,
        "evaluate",
        EvalConfig,
        run,
        __doc__.split(": ", 1)[1],
        positional=("run",),
        skip=("attack_cfg",),
        extra=(*ATTACK, JSON, THREADS),
    )
