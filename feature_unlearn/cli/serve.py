"""``unlearn-cli serve``: the runtime's own ``unlearn-serve`` command, so both take the options of ServeConfig."""

from __future__ import annotations

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def serve(ctx: typer.Context) -> None:
    """Serve an exported guarded generator over HTTP (no torch; auth from $UNLEARN_SERVE_TOKEN); see --help."""
    from feature_unlearn.serve.__main__ import main  # lazy, and torch-free: the serving process never imports torch

    main(ctx.args, prog="unlearn-cli serve")


def register(app: typer.Typer) -> None:
    app.command("serve", context_settings=PASS_THROUGH, add_help_option=False)(serve)
