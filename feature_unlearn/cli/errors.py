"""One-line errors for every command: a UserError or a missing extra becomes ``error: ...`` and exit code 2."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, Optional, TypeVar

import typer

from feature_unlearn.unlearn.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
DISTRIBUTION = "feature-unlearn"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def extra_for(module: str) -> Optional[str]:
    """The extra of this distribution that installs ``module``, read from the installed package metadata."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    known = {_norm(d) for d in importlib.metadata.packages_distributions().get(module, [])} | {_norm(module)}
    for req in requires:
        name = re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0]
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if extra and _norm(name) in known:
            return extra.group(1)
    return None


def user_errors(fn: F) -> F:
    """Turn a UserError into one line on stderr and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # an install without the training or ONNX extras
            module = (exc.name or "").split(".")[0]
            extra = extra_for(module)
            if extra is None:
                raise
            typer.echo(f"error: this command needs {exc.name}: pip install '{DISTRIBUTION}[{extra}]'", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
