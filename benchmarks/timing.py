"""Timing primitives: warm-up, interleaved rounds, per-call samples, medians and percentiles.

Contenders alternate round by round in a shuffled order (as in ``export_speed.interleaved``) so
a burst of load from other jobs hits all of them alike; every call is timed on its own, which
gives the latency distribution (p50, p99) as well as the throughput (batch / median).
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat; NaN where it does not exist)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ForeignCpu:
    """Cores other processes kept busy while the block ran: machine busy time minus this process's CPU time."""

    def __enter__(self) -> ForeignCpu:
        self.cores = math.nan
        self._start = (cpu_busy_s(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = (
            b - a for a, b in zip(self._start, (cpu_busy_s(), time.process_time(), time.perf_counter()), strict=True)
        )
        self.cores = max(0.0, (busy - own) / wall) if wall > 0 else math.nan


def idle_probe(seconds: float = 1.0) -> float:
    """Cores busy with other jobs while this process sleeps for ``seconds``."""
    with ForeignCpu() as f:
        time.sleep(seconds)
    return round(f.cores, 2)


@dataclass(frozen=True)
class Timing:
    samples_s: tuple[float, ...]
    first_call_s: float  # the first warm-up call (includes compilation for compiled backends)
    foreign_cores: float = math.nan  # other processes' CPU use during the timed rounds (cores)

    @property
    def p50_ms(self) -> float:
        return 1e3 * statistics.median(self.samples_s)

    @property
    def p99_ms(self) -> float:
        return 1e3 * float(np.percentile(self.samples_s, 99))

    def images_per_s(self, batch: int) -> float:
        return batch / statistics.median(self.samples_s)


def warm(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(first call seconds, last call seconds) over ``calls`` ≥ 1 warm-up calls."""
    first = last = 0.0
    for i in range(max(1, calls)):
        t = time.perf_counter()
        fn()
        last = time.perf_counter() - t
        first = last if i == 0 else first
    return first, last


def calls_for(seconds_per_call: float, budget_s: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, math.ceil(budget_s / max(seconds_per_call, 1e-6))))


def interleave(
    fns: dict[str, Callable[[], object]], warmup: int, budget_s: float, lo: int, hi: int, rounds: int, seed: int = 0,
    settle: int = 1,
) -> tuple[dict[str, Timing], dict[str, str]]:
    """Warm each contender up, then time them in ``rounds`` shuffled rounds; per-call samples each.

    Each block starts with ``settle`` untimed calls: right after a switch, the previous contender's
    thread pool may still be spinning (ONNX Runtime's workers spin-wait after a run) and steals a core.
    Returns the timings and, for contenders whose warm-up raised (a compiler missing, say), the error.
    """  # fmt: skip
    firsts, per_call, failed = {}, {}, {}
    for name, fn in list(fns.items()):
        try:
            firsts[name], per_call[name] = warm(fn, warmup)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    fns = {k: v for k, v in fns.items() if k not in failed}
    calls = {k: calls_for(v, budget_s, lo, hi) for k, v in per_call.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(seed)
    with ForeignCpu() as foreign:
        for r in range(rounds):
            rng.shuffle(order)
            for name in order:
                fn, n = fns[name], calls[name] // rounds + (1 if r < calls[name] % rounds else 0)
                for _ in range(settle if n else 0):
                    fn()
                for _ in range(n):
                    t = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t)
    return {k: Timing(tuple(v), firsts[k], round(foreign.cores, 2)) for k, v in samples.items()}, failed


def block_ratios(
    a: Callable[[], object], b: Callable[[], object], rounds: int, per_block: int, settle: int = 1
) -> tuple[list[float], list[float], list[float]]:
    """Alternate blocks of ``per_block`` calls of a and b (order alternating, ``settle`` untimed calls after each switch).

    Returns all samples of a, of b, and the ratio of a's block median to b's in each round: neighbouring
    blocks share the machine's state, so the per-round ratio cancels drift that lasts longer than a block.
    """
    ta: list[float] = []
    tb: list[float] = []
    ratios: list[float] = []
    for r in range(rounds):
        block: dict[int, list[float]] = {0: [], 1: []}
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            fn = a if which == 0 else b
            for _ in range(settle):
                fn()
            for _ in range(per_block):
                t = time.perf_counter()
                fn()
                block[which].append(time.perf_counter() - t)
        ta += block[0]
        tb += block[1]
        ratios.append(statistics.median(block[0]) / statistics.median(block[1]))
    return ta, tb, ratios
