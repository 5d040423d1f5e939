"""Typer commands generated from a stage's frozen config dataclass: one source for names, types, defaults and help.

A field becomes ``--field-name`` (or the ``flag`` in its metadata), typed by its annotation, with
its default and the ``help`` / ``min`` / ``max`` of its metadata. ``tuple[X, ...]`` fields become
repeatable options; ``bool`` fields ``--x/--no-x`` flags. A command may add parameters that are
not part of the config (``--threads``, ``--json``): they reach ``run`` as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from feature_unlearn.cli.errors import user_errors

KW = inspect.Parameter.KEYWORD_ONLY


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def _param(f: dataclasses.Field[Any], hint: Any, positional: bool, default: Any) -> inspect.Parameter:
    meta, flag = f.metadata, f"--{f.name.replace('_', '-')}"
    if typing.get_origin(hint) is tuple:  # repeatable: --feature a --feature b
        hint = list[typing.get_args(hint)[0]]  # type: ignore[misc]
        default = list(default) if default is not ... else []
    if positional:
        info = typer.Argument(default, help=meta.get("help"), show_default=default is not ...)
    else:
        decls = [meta["flag"]] if "flag" in meta else []
        if hint is bool:
            name = (meta.get("flag") or flag)[2:]
            decls = [f"--{name}/--no-{name}"]
        info = typer.Option(default, *decls, help=meta.get("help"), min=meta.get("min"), max=meta.get("max"))
    return inspect.Parameter(f.name, KW, default=info, annotation=hint)


def config_params(
    cls: type, positional: tuple[str, ...] = (), skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> list[inspect.Parameter]:
    """One typer parameter per field of ``cls`` (positional ones first, in the order given)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip and f.init}
    defaults = defaults or {}
    order = [*positional, *(n for n in fields if n not in positional)]
    return [_param(fields[n], hints[n], n in positional, defaults.get(n, _default(fields[n]))) for n in order]


def extra_param(name: str, hint: Any, default: Any, *decls: str, **kwargs: Any) -> inspect.Parameter:
    """A command parameter that is not part of the config (``--threads``, ``--json PATH``)."""
    return inspect.Parameter(name, KW, default=typer.Option(default, *decls, **kwargs), annotation=hint)


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Lists from repeatable options back to the tuples the config declares."""
    hints = typing.get_type_hints(cls)
    return {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in values.items()}


def config_command(
    app: typer.Typer,
    name: str,
    cls: type,
    run: Callable[..., None],
    doc: str,
    positional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    extra: tuple[inspect.Parameter, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Register ``name``: parse the generated options, build ``cls(**fields)`` and call ``run(cfg, **extras)``."""
    params = [*config_params(cls, positional, skip, defaults), *extra]
    extra_names = {p.name for p in extra}

    def command(**kwargs: Any) -> None:
        extras = {k: kwargs.pop(k) for k in extra_names}
        run(cls(**_coerce(cls, kwargs)), **extras)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc[:1].upper() + doc[1:]
    command.__name__ = name.replace("-", "_")
    app.command(name)(user_errors(command))


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


THREADS = extra_param("threads", typing.Optional[int], None, min=1, help="torch threads (default: all cores).")
