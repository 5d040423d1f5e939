"""``unlearn-cli``: the composition root. Each command lives in its own module and stays thin:
parse (options generated from the stage's config dataclass), build the config, call one function."""

from __future__ import annotations

import sys

import typer

from feature_unlearn.cli import bench, collect, evaluate, export, fit, pretrain, serve, zoo

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Remove features from pre-trained image generators.")
for command in (zoo, pretrain, collect, fit, evaluate, export, serve, bench):
    command.register(app)


def main() -> None:
    sys.exit(app())
