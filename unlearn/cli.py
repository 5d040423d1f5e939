"""``unlearn-cli``: thin typer commands that parse flags, build a config and call one function."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from unlearn.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Remove features from pre-trained image generators.")
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a UserError into one line on stderr and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _threads(n: Optional[int]) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


@app.command()
@user_errors
def zoo(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """List the shipped models with their measured metrics."""
    from unlearn.zoo import zoo_table

    rows = zoo_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':28} {'kind':10} {'arch':7} {'size':>7}  metrics")
    for r in rows:
        m = r["metrics"]
        summary = (
            " ".join(f"{k}={v:.3f}" for k, v in m.get("heldout_accuracy", {}).items())
            or f"fid={m.get('fid_heldout')} " + " ".join(f"{k}={v:.3f}" for k, v in m.get("generated_rates", {}).items() if "=" not in k)
        )
        typer.echo(f"{r['name']:28} {r['kind']:10} {r['arch']:7} {r['size_kb']:>5}KB  {summary}")


@app.command()
@user_errors
def pretrain(
    dataset: Optional[str] = typer.Option(None, help="mnist, faces or folder:PATH."),
    model: Optional[str] = typer.Option(None, help="vae, dcgan, labeller or auditor."),
    exclude: Optional[str] = typer.Option(None, help="Train an oracle without this binary attribute."),
    recipe: Optional[str] = typer.Option(None, help="Reproduce a zoo entry exactly (e.g. mnist-vae)."),
    out: Path = typer.Option(..., help="Output directory."),
    epochs: Optional[int] = typer.Option(None, min=1),
    seed: Optional[int] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, min=16, help="Use only the first N images."),
    auditor: Optional[str] = typer.Option(None, help="Classifier for metrics (default: the zoo auditor)."),
    eval_samples: int = typer.Option(10_000, min=100),
    threads: Optional[int] = typer.Option(None, min=1),
) -> None:
    """Train a generator or classifier from scratch (the zoo's recipes by default)."""
    from unlearn.errors import ConfigError
    from unlearn.pretrain.recipes import RECIPES, recipe_name
    from unlearn.pretrain.run import PretrainConfig
    from unlearn.pretrain.run import pretrain as run

    _threads(threads)
    if recipe is None and (dataset is None or model is None):
        raise ConfigError("give --recipe NAME, or both --dataset and --model")
    name = recipe or recipe_name(str(dataset), str(model), exclude)
    base = RECIPES.get(name)
    if base is None:
        if recipe is not None:
            raise ConfigError(f"--recipe {recipe!r}: unknown; choose from {', '.join(RECIPES)}")
        base = RECIPES[recipe_name("faces" if str(dataset).startswith("folder:") else str(dataset), str(model), None)] if str(model) in ("vae", "dcgan", "labeller", "auditor") and (str(dataset) in ("mnist", "faces") or str(dataset).startswith("folder:")) else None  # noqa: E501
        if base is None:
            raise ConfigError(f"--dataset {dataset!r} --model {model!r}: no recipe (models: vae, dcgan, labeller, auditor)")
    train = dataclasses.replace(base.train, **{k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None})
    cfg = PretrainConfig(
        dataset=dataset or base.dataset, model=model or base.model, exclude=exclude if recipe is None else base.exclude,
        out=out, train=train, limit=limit, auditor=auditor, eval_samples=eval_samples,
    )  # fmt: skip
    metrics = run(cfg)
    typer.echo(json.dumps(metrics, indent=2))


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
