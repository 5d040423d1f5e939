"""One timer, one FLOPs counter, this machine's fp32 GEMM peak and the peak-memory probe.

The timer warms every contender up, then alternates them in shuffled rounds and times each call:
load from other jobs hits all contenders alike; per-call samples give p50/p99 as well as the
throughput; per-round samples give ratios of neighbouring blocks, which cancel the machine's slow
drift (the guard overhead). Torch is imported only where it is measured: the serve load test and
the ONNX Runtime memory probe run without it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Fn = Callable[[], object]
ROOT = Path(__file__).resolve().parents[1]


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat; NaN where there is none)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return math.nan
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def clock() -> tuple[float, float, float]:
    return busy_cpu_s(), time.process_time(), time.perf_counter()


def foreign_cores(since: tuple[float, float, float]) -> float:
    """Cores other processes kept busy since ``clock()`` was ``since``: the machine's busy time minus this process's."""
    busy, own, wall = (b - a for a, b in zip(since, clock(), strict=True))
    return round(max(0.0, (busy - own) / wall), 2)


def idle_probe(seconds: float = 1.0) -> float:
    start = clock()
    time.sleep(seconds)
    return foreign_cores(start)


@dataclass(frozen=True)
class Timing:
    rounds: tuple[tuple[float, ...], ...]  # seconds of each timed call, per round
    warmup: tuple[float, ...]  # seconds of each warm-up call (the first compiles a compiled backend)
    cpu_s: float  # this process's CPU seconds over the timed calls (every thread)
    foreign_cores: float  # other processes' CPU use during the rounds

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    def ms(self, percentile: float) -> float:
        return 1e3 * float(np.percentile(self.samples, percentile))


def _calls(fn: Fn, n: int, into: list[float]) -> float:
    """``n`` timed calls; returns this process's CPU seconds over them."""
    cpu = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        into.append(time.perf_counter() - t)
    return time.process_time() - cpu


SWITCH_PAUSE_S = 0.05


def interleave(
    fns: dict[str, Fn], warmup: int, budget_s: float, calls: tuple[int, int], rounds: int, seed: int = 0
) -> tuple[dict[str, Timing], dict[str, str]]:
    """Time each contender ``budget_s`` (as calls, clamped to ``calls``) over ``rounds`` shuffled rounds.

    A contender whose warm-up raises (a compiler missing, say) is not timed: its error comes back instead.
    """
    warm: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    for name, fn in fns.items():
        try:
            _calls(fn, max(1, warmup), warm.setdefault(name, []))
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run is a finding, not a crash
            failed[name] = one_line(exc)
            del warm[name]
    total = {k: max(calls[0], min(calls[1], math.ceil(budget_s / max(w[-1], 1e-6)))) for k, w in warm.items()}
    samples: dict[str, list[list[float]]] = {k: [[] for _ in range(rounds)] for k in warm}
    cpu, order, rng, start = dict.fromkeys(warm, 0.0), list(warm), random.Random(seed), clock()
    for r in range(rounds):
        rng.shuffle(order)
        for k in order:
            if n := total[k] // rounds + (r < total[k] % rounds):
                # after a switch the previous contender's threads may still spin (ONNX Runtime's and OpenMP's
                # do) and take a core: a pause lets them park (a bf16 program right after ONNX Runtime ran
                # 4.8 ms instead of 4.1 with the untimed call alone), then one untimed call
                time.sleep(SWITCH_PAUSE_S)
                fns[k]()
            cpu[k] += _calls(fns[k], n, samples[k][r])
    foreign = foreign_cores(start)
    timings = {k: Timing(tuple(map(tuple, samples[k])), tuple(warm[k]), cpu[k], foreign) for k in warm}
    return timings, failed


def gemm_peak(n: int = 2048, reps: int = 12) -> float:
    """This machine's fp32 GEMM GFLOP/s: the best of ``reps`` timed n×n torch matmuls."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / min(interleave({"gemm": lambda: a @ b}, 1, 0, (reps, reps), 1)[0]["gemm"].samples) / 1e9


def flops_per_image(generator: Any, z_dim: int) -> float:
    """Floating-point operations of one image, counted by torch.utils.flop_counter (2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        generator(torch.zeros(1, z_dim))
    return float(counter.get_total_flops())


MEMORY_BACKENDS = ("torch-eager", "torch-compile", "onnxruntime-cpu")
MEMORY_METHOD = (
    "Resident set size (VmRSS) sampled every 0.5 ms in a fresh process per backend while it runs 5 batches, "
    "after loading and one warm-up call; steady = RSS before the calls, working = peak − steady, high-water = VmHWM "
    "of that process (load and compilation included; not ru_maxrss, which on Linux keeps the parent's high-water "
    "mark across fork + exec). The ONNX Runtime process imports no torch."
)


def rss_mb(field: str = "VmRSS:") -> float:
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(field)).split()[1]) / 1024


def memory_child() -> None:
    """In a fresh process: build the backend, warm it up, run the calls while sampling RSS; print MB as JSON."""
    a = json.loads(sys.argv[1])
    if a["backend"] == "onnxruntime-cpu":  # the service's runtime: no torch in this process
        from feature_unlearn.serve.runtime import SafeGenerator

        gen = SafeGenerator.load(a["artifact"], threads=a["threads"])
        fn: Fn = functools.partial(gen.generate, n=a["batch"], seed=0)
    else:
        from benchmarks.inference import torch_backend

        fn = torch_backend(a["model"], a["backend"], a["batch"], a["threads"], a.get("trust_code", False))
    fn()
    steady = peak = rss_mb()
    worker = threading.Thread(target=lambda: [fn() for _ in range(5)])
    worker.start()
    while worker.is_alive():
        peak = max(peak, rss_mb())
        time.sleep(5e-4)
    print(json.dumps({"steady_mb": steady, "peak_mb": max(peak, rss_mb()), "hwm_mb": rss_mb("VmHWM:")}))


def memory(
    model: str, backend: str, artifact: Path, batch: int, threads: int, trust_code: bool = False
) -> dict[str, Any]:
    """``memory_child``'s figures (rounded MB), or the error its process ended with."""
    given = {"model": model, "backend": backend, "artifact": str(artifact), "batch": batch, "threads": threads}
    args = json.dumps(given | {"trust_code": trust_code})
    cmd = [sys.executable, "-c", "from benchmarks.measure import memory_child; memory_child()", args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-300:]}
    return {k: round(v, 1) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
