"""What tamper evidence costs at load: sha256 of model.onnx and the known-answer self-test, per zoo generator.

    python -m benchmarks.trust_cost [--rounds 7]

Each base generator of the zoo is exported behind a guard (a random unit direction, t = 1; the
cost depends on neither), then loaded ``rounds`` times with ``SafeGenerator.load``; medians and
maxima are printed as a markdown table. Target (issue 12): self-test ≤ 200 ms on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.inference import export_zoo
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn.pretrain.recipes import base_generators


def measure(name: str, root: Path, rounds: int) -> str:
    art = root / name
    export_zoo(name, art)
    selftest, sha, load = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        gen = SafeGenerator.load(art)
        load.append(time.perf_counter() - started)
        selftest.append(gen.timings["self_test_s"])
        sha.append(gen.timings["hash_s"])
    mb = (art / "model.onnx").stat().st_size / 1e6
    ms = [1e3 * statistics.median(x) for x in (selftest, sha, load)]
    return f"| {name} | {mb:.2f} | {ms[0]:.1f} (max {1e3 * max(selftest):.1f}) | {ms[1]:.2f} | {ms[2]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print("| model | model.onnx MB | self-test ms, median | sha256 ms, median | whole load ms, median |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in base_generators():
            print(measure(name, Path(tmp), args.rounds), flush=True)


if __name__ == "__main__":
    main()
