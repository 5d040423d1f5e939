"""What the in-graph image check costs: guarded ONNX Runtime CPU with and without it, side by side.

    python -m benchmarks.check_cost RUN [RUN ...] [--batch 64] [--budget 6]

Each fit run is exported twice (``export`` with and without ``--image-check``; the check is
distilled once into the run directory), then both graphs are timed in shuffled, interleaved
rounds in one process (``benchmarks.measure.interleave``). Target (issue 9): overhead ≤ 15% of
the guarded generator's time at batch 64.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.measure import Fn, interleave
from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.serve import SafeGenerator


def measure(run: Path, root: Path, batch: int, budget_s: float, threads: int | None) -> str:
    arts = {}
    for name, check in (("guarded", False), ("guarded+check", True)):
        arts[name] = root / f"{run.name}-{name}"
        export_model(ExportConfig(source=str(run), out=arts[name], image_check=check))
    gens = {name: SafeGenerator.load(art, threads=threads) for name, art in arts.items()}
    z = np.random.default_rng(0).standard_normal((batch, gens["guarded"].z_dim), dtype=np.float32)

    def graph(g: SafeGenerator) -> Fn:
        return lambda: g._run_all(z)  # the graph alone, no policy

    fns = {name: graph(g) for name, g in gens.items()}
    timings, failed = interleave(fns, warmup=3, budget_s=budget_s, calls=(20, 2000), rounds=5)
    assert not failed, failed
    base, checked = (1e3 * timings[k].median_s for k in ("guarded", "guarded+check"))
    return f"| {run} | {batch} | {base:.2f} | {checked:.2f} | {checked / base - 1:+.1%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed calls per graph")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    args = parser.parse_args()
    print("| run | batch | guarded ms (median) | guarded + image check ms | overhead |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            print(measure(run, Path(tmp), args.batch, args.budget, args.threads), flush=True)


if __name__ == "__main__":
    main()
