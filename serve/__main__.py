"""``unlearn-serve ARTIFACT [options]`` (also ``python -m feature_unlearn.serve`` and ``unlearn-cli serve``).

The options are generated from ``ServeConfig``'s fields, so the runtime-only install (no typer,
no torch) and the full package's CLI take exactly the same flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import Any, Optional

from feature_unlearn.serve.config import ServeConfig
from feature_unlearn.serve.errors import ServeError

PROG = "unlearn-serve"


def _kind(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve an exported guarded generator over HTTP (no torch; bearer auth from $UNLEARN_SERVE_TOKEN).",
    )
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        kind, help_text = _kind(hints[f.name]), f.metadata.get("help", "")
        if f.default is dataclasses.MISSING:
            p.add_argument(f.name, type=kind, help=help_text)
        elif kind is bool:
            p.add_argument(
                f"--{f.name.replace('_', '-')}",
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_text,
            )
        else:
            shown = "" if f.default is None else f" (default: {f.default})"
            p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=help_text + shown)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> None:
    """Parse, check and serve until SIGINT/SIGTERM; a bad option or artifact is one line and exit code 2."""
    args = parser(prog).parse_args(argv)
    try:
        config = ServeConfig(**vars(args))
        from feature_unlearn.serve.http import run_server

        run_server(config)
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
