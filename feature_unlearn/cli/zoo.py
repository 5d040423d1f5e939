"""``unlearn-cli zoo``: the shipped generators and classifiers with their measured metrics."""

from __future__ import annotations

import json

import typer

from feature_unlearn.cli.errors import user_errors


def _summary(metrics: dict) -> str:  # type: ignore[type-arg]
    accuracy = " ".join(f"{k}={v:.3f}" for k, v in metrics.get("heldout_accuracy", {}).items())
    rates = " ".join(f"{k}={v:.3f}" for k, v in metrics.get("generated_rates", {}).items() if "=" not in k)
    return accuracy or f"fid={metrics.get('fid_heldout')} {rates}"


def zoo(
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    names: bool = typer.Option(
        False, "--names", help="Only the registry's entry names, classifiers first (scripts/build_zoo.sh)."
    ),
) -> None:
    """List the shipped models with their measured metrics."""
    if names:
        from feature_unlearn.unlearn.pretrain.recipes import names as registry_names

        typer.echo("\n".join(registry_names()))
        return
    from feature_unlearn.unlearn.zoo import zoo_table

    rows = zoo_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':28} {'kind':10} {'arch':7} {'size':>7}  metrics")
    for r in rows:
        typer.echo(f"{r['name']:28} {r['kind']:10} {r['arch']:7} {r['size_kb']:>5}KB  {_summary(r['metrics'])}")


def register(app: typer.Typer) -> None:
    app.command()(user_errors(zoo))
