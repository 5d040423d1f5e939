"""``python -m benchmarks [OPTIONS]``: the same command as ``unlearn-cli bench`` (options from BenchConfig)."""

import typer

from feature_unlearn.cli import bench

app = typer.Typer(add_completion=False)
bench.register(app)

if __name__ == "__main__":
    app()
