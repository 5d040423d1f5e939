"""``unlearn-cli bench``: benchmarks from a checkout (``benchmarks/`` is not part of the installed package)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from feature_unlearn.cli.errors import user_errors
from feature_unlearn.unlearn.errors import ConfigError


def _harness() -> None:
    try:
        import benchmarks  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("bench runs from a checkout of the repository: cd into it (benchmarks/ is not installed)") from None


def bench(
    quick: bool = typer.Option(False, "--quick", help="≤ 5-minute smoke run: mnist models, batches 1/64, tiny fit."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Results JSON (default: OUT/results.json)."),
    out: Optional[Path] = typer.Option(None, help="RESULTS.md and plots (default: benchmarks/, or runs/bench-quick/ with --quick)."),
    work: Optional[Path] = typer.Option(None, help="Fit runs of the unlearning table (default: runs/bench)."),
    model: list[str] = typer.Option([], "--model", help="Generators for the inference section (repeat; default: the four base ones)."),
    batch: list[int] = typer.Option([], "--batch", help="Batch sizes (repeat; default 1, 16, 64, 256)."),
    skip_inference: bool = typer.Option(False, "--skip-inference"),
    skip_fit: bool = typer.Option(False, "--skip-fit", help="Skip fit speed (precisions, compile, DDP)."),
    skip_unlearning: bool = typer.Option(False, "--skip-unlearning", help="Skip the fit + evaluate table."),
    skip_serve: bool = typer.Option(False, "--skip-serve", help="Skip the HTTP load test."),
    skip_memory: bool = typer.Option(False, "--skip-memory"),
    report_only: bool = typer.Option(False, "--report-only", help="Rebuild RESULTS.md, plots and targets from --json; measure nothing."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch and ONNX Runtime threads (default: all cores)."),
) -> None:
    """Benchmark inference backends, fit speed and unlearning quality in one run (JSON, RESULTS.md, plots)."""
    _harness()
    from benchmarks.config import BASE_GENERATORS, make_config
    from benchmarks.harness import rerender, run_bench

    unknown = [m for m in model if m not in BASE_GENERATORS]
    if unknown:
        raise ConfigError(f"--model {unknown[0]!r}: choose from {', '.join(BASE_GENERATORS)}")
    if any(b < 1 for b in batch):
        raise ConfigError("--batch must be ≥ 1")
    off = {k: False for k, skip in (("inference", skip_inference), ("fit", skip_fit), ("unlearning", skip_unlearning),
                                    ("serve", skip_serve), ("memory", skip_memory)) if skip}  # fmt: skip
    cfg = make_config(quick, json_path=as_json, out=out, work=work, models=tuple(model) or None,
                      batches=tuple(sorted(set(batch))) or None, threads=threads, **off)  # fmt: skip
    if report_only:
        rerender(cfg)
        typer.echo(f"rebuilt {cfg.out / 'RESULTS.md'} from {cfg.results_json}")
        return
    res = run_bench(cfg, command=" ".join(["unlearn-cli", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "unlearn-cli bench")
    met = [t for t in res.get("targets", []) if t["met"] is not None]
    typer.echo(f"wrote {cfg.results_json} and {cfg.out / 'RESULTS.md'}; targets met: {sum(t['met'] for t in met)}/{len(met)}")


def register(app: typer.Typer) -> None:
    app.command()(user_errors(bench))
