"""``unlearn-cli bench``: benchmark inference backends, fit speed, unlearning and HTTP serving in one run.

The harness, ``benchmarks/``, is a tool of the repository and not installed: the command runs it
from a checkout in the current directory (``python -m benchmarks`` is the same command). Its
options live here, so that every other command and ``--help`` work without importing anything
from the current directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from feature_unlearn.cli.options import config_command, extra_param
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.fields import opt
from feature_unlearn.unlearn.fit.config import FitConfig

SECTIONS = ("inference", "memory", "fit", "ddp", "unlearning", "serve", "resolution")
DOC = (
    "benchmark inference backends, fit speed, unlearning, HTTP serving and cost against resolution "
    "(JSON, RESULTS.md, plots)."
)
REPORT_ONLY = extra_param(
    "report_only", bool, False, "--report-only", help="Rebuild RESULTS.md and the plots from --json; measure nothing."
)


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = opt(
        False,
        "≤ 5-minute smoke run: mnist generators, batches 1 and 64, tiny fits; no memory, no serve; the resolution "
        "section adds about 3 minutes (--skip resolution leaves it out).",
    )
    out: Optional[Path] = opt(None, "RESULTS.md and the plots (default: benchmarks/; --quick: runs/bench-quick/).")
    results: Optional[Path] = opt(None, "Results JSON (default: OUT/results.json).", flag="--json")
    work: Optional[Path] = opt(None, "Fit runs of the unlearning table (default: runs/bench; --quick: OUT/work).")
    models: tuple[str, ...] = opt((), "Generator to time (repeat; default: the zoo's base generators).", flag="--model")
    batches: tuple[int, ...] = opt((), "Batch size (repeat; default 1, 16, 64, 256; --quick: 1, 64).", flag="--batch")
    skip: tuple[str, ...] = opt((), f"Section to leave out (repeat): {', '.join(SECTIONS)}.")
    threads: int = opt(os.cpu_count() or 1, "torch and ONNX Runtime threads (default: all cores).", min=1)
    serve_seconds: float = opt(20.0, "Seconds of HTTP load in the serve section.", min=1.0)
    seed: int = opt(0, "Seed of the latents and the fits.")
    trust_code: bool = opt(False, "Allow --model package.module:factory (your generator) to import and run that code.")
    robust: bool = opt(
        FitConfig.robust,
        "The unlearning table fits with fit --robust (its mining phase after the rounds), fit's default.",
    )

    def __post_init__(self) -> None:
        from feature_unlearn.unlearn.byo import is_spec
        from feature_unlearn.unlearn.pretrain.recipes import base_generators  # imports torch: not for --help

        zoo = [m for m in self.models if not is_spec(m)]
        for flag, values, allowed in (("--model", zoo, base_generators()), ("--skip", self.skip, SECTIONS)):
            if unknown := [v for v in values if v not in allowed]:
                raise ConfigError(
                    f"{flag} {unknown[0]!r}: choose from {', '.join(allowed)} (or package.module:factory)"
                )
        foreign = [m for m in self.models if is_spec(m)]
        if foreign and not self.trust_code:
            raise ConfigError(f"--model {foreign[0]}: importing a factory runs its code; add --trust-code to allow it")
        if any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch {min(self.batches)}: batch sizes must be ≥ 1")

    @property
    def out_dir(self) -> Path:
        return self.out or Path("runs/bench-quick" if self.quick else "benchmarks")

    @property
    def json_path(self) -> Path:
        return self.results or self.out_dir / "results.json"

    @property
    def work_dir(self) -> Path:
        return self.work or (self.out_dir / "work" if self.quick else Path("runs/bench"))


def checkout() -> None:
    """Make the checkout's ``benchmarks`` importable (a console script's path lacks the current directory)."""
    init = Path.cwd() / "benchmarks" / "__init__.py"
    if "benchmarks" in sys.modules or importlib.util.find_spec("benchmarks") is not None:
        return
    spec = importlib.util.spec_from_file_location("benchmarks", init, submodule_search_locations=[str(init.parent)])
    if not init.is_file() or spec is None or spec.loader is None:
        raise ConfigError("bench runs from a checkout of the repository: cd into it (benchmarks/ is not installed)")
    sys.modules["benchmarks"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["benchmarks"])


def command_line() -> str:
    """This invocation as ``unlearn-cli bench ...`` (from ``unlearn-cli bench`` or ``python -m benchmarks``)."""
    args = sys.argv[1:]
    return " ".join(["unlearn-cli", "bench", *(args[1:] if args[:1] == ["bench"] else args)])


def run(cfg: BenchConfig, report_only: bool) -> None:
    checkout()
    from benchmarks.config import Run
    from benchmarks.harness import rerender, run_bench
    from benchmarks.records import Verdict, all_targets

    if report_only:
        rerender(Run.of(cfg))
        typer.echo(f"rebuilt {cfg.out_dir / 'RESULTS.md'} and the plots from {cfg.json_path}")
        return
    verdicts = [t.verdict for t in all_targets(run_bench(Run.of(cfg), command_line()))]
    judged = [v for v in verdicts if v in (Verdict.MET, Verdict.MISSED)]
    met = f"targets met: {judged.count(Verdict.MET)}/{len(judged)} judged"
    typer.echo(f"wrote {cfg.json_path} and {cfg.out_dir / 'RESULTS.md'}; {met}")


def register(app: typer.Typer) -> None:
    config_command(app, "bench", BenchConfig, run, DOC, extra=(REPORT_ONLY,))
