"""The goals of issues 3, 6 and 12, judged on one run's records: ratios, never pass/fail on absolute speed.

Each target is built from the rows it reads, so it knows its model and batch and how much other
processes disturbed those rows: a disturbed speed target is reported, not judged.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from benchmarks.config import COMPILED, CPU_BACKENDS, FOREIGN_LIMIT
from benchmarks.records import Inference, Results, ServeLoad, UnlearnRow

BATCH, GPU_BATCH = 64, 256  # the CPU targets are read at batch 64, the GPU one at 256


class Verdict(str, enum.Enum):
    MET = "yes"
    MISSED = "no"
    NOT_JUDGED = "not judged"  # measured while other processes used the machine
    NOT_MEASURED = "n/a"


@dataclass(frozen=True)
class Goal:
    op: str  # >=, <= or >
    bound: float
    unit: str = ""

    def met(self, value: float) -> bool:
        return {">=": operator.ge, "<=": operator.le, ">": operator.gt}[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}{self.unit}"


FASTER, X1_5, X3 = Goal(">", 1, "x"), Goal(">=", 1.5, "x"), Goal(">=", 3, "x")


@dataclass(frozen=True)
class Target:
    metric: str
    model: str
    batch: Optional[int]
    goal: Goal
    measured: Optional[float]
    verdict: Verdict
    detail: str


def judge(
    metric: str, model: str, batch: Optional[int], goal: Goal, value: Optional[float], detail: str, foreign: float = 0
) -> Target:
    if value is None:
        return Target(metric, model, batch, goal, None, Verdict.NOT_MEASURED, detail)
    if foreign > FOREIGN_LIMIT:
        detail, verdict = f"{detail}; other processes used {foreign:.2f} cores", Verdict.NOT_JUDGED
    else:
        verdict = Verdict.MET if goal.met(value) else Verdict.MISSED
    return Target(metric, model, batch, goal, round(value, 4), verdict, detail)


def speed(inf: Inference, num: str, den: str, model: str, batch: int, goal: Goal, note: str = "") -> Target:
    """``num``'s images/s over ``den``'s, on the same model and batch."""
    a, b = inf.find(num, model, batch), inf.find(den, model, batch)
    if a is None or b is None:
        return judge(
            f"{num} / {den}", model, batch, goal, None, f"not measured: {num if a is None else den} did not run"
        )
    detail = f"{a.images_per_s:.0f} vs {b.images_per_s:.0f} images/s{note}"
    ratio = a.images_per_s / b.images_per_s
    return judge(f"{num} / {den}", model, batch, goal, ratio, detail, max(a.foreign_cores, b.foreign_cores))


def cpu_targets(inf: Inference, m: str, peak: float) -> Iterator[Target]:
    rows = [r for r in inf.rows if r.model == m and r.batch == BATCH]
    yield speed(inf, "onnxruntime-cpu", "torch-eager", m, BATCH, X1_5, "; both guarded, uint8 out")
    yield speed(inf, "onnxruntime-cpu", "torch-eager-generator", m, BATCH, X1_5, "; eager: no guard, float out")
    for r in rows:
        if r.backend in COMPILED:
            yield speed(inf, r.backend, "torch-eager", m, BATCH, FASTER, f"; compile {r.first_call_s:.1f} s")
    cpu = [r for r in rows if r.backend in CPU_BACKENDS]
    best, disturbed = max(cpu, key=lambda r: r.gflops), max(r.foreign_cores for r in cpu)
    detail = f"{best.backend}: {best.gflops:.1f} GFLOP/s"
    yield judge("best CPU backend / fp32 GEMM peak", m, BATCH, Goal(">=", 0.7), best.gflops / peak, detail, disturbed)
    for g in inf.guard:
        if (g.model, g.backend, g.batch) == (m, "onnxruntime-cpu", BATCH):
            low, high = g.overhead_iqr
            detail = f"median of {g.rounds} block ratios (quartiles {low:+.1%} to {high:+.1%}); "
            detail += f"medians {g.guarded_ms:.3f} vs {g.unguarded_ms:.3f} ms"
            yield judge("ORT guarded / unguarded − 1", m, BATCH, Goal("<=", 0.01), g.overhead, detail, g.foreign_cores)


def inference_targets(inf: Inference, peak: float) -> Iterator[Target]:
    for m in (i.name for i in inf.models):
        if any(r.model == m and r.batch == BATCH and r.backend in CPU_BACKENDS for r in inf.rows):
            yield from cpu_targets(inf, m, peak)
        if any(r.model == m and r.backend == "torch-cuda-eager" for r in inf.rows):
            yield speed(inf, "onnxruntime-tensorrt-fp16", "torch-cuda-eager", m, GPU_BATCH, X3)
    if inf.models and not any(r.backend == "torch-cuda-eager" for r in inf.rows):
        yield judge("onnxruntime-tensorrt-fp16 / torch-cuda-eager", "all", GPU_BATCH, X3, None, "no CUDA device here")


def unlearning_targets(r: UnlearnRow) -> Iterator[Target]:
    rate, fid, pgd, m = r.target_rate, r.fid, r.pgd_success, r.model
    resid, orig, oracle = rate["unlearned+guard"], rate["original"], rate.get("oracle")
    ratio = resid / orig if orig else None
    yield judge(
        "target rate (unlearned+guard) / original", m, None, Goal("<=", 0.25), ratio, f"{resid:.4f} vs {orig:.4f}"
    )
    gap, detail = (None, "no oracle") if oracle is None else (100 * (resid - oracle), f"{resid:.4f} vs {oracle:.4f}")
    yield judge("target rate (unlearned+guard) − oracle's", m, None, Goal("<=", 1, " pp"), gap, detail)
    detail = f"{fid['unlearned']:.3f} vs {fid['original']:.3f}"
    yield judge("FID unlearned / original", m, None, Goal("<=", 1.1), fid["unlearned"] / fid["original"], detail)
    attribute, flip = r.worst_flip
    yield judge("worst attribute flip on non-target samples", m, None, Goal("<=", 0.05), flip, str(attribute))
    ratio = pgd["unlearned+guard"] / pgd["original"] if pgd.get("original") else None
    detail = f"{pgd.get('unlearned+guard', 0):.3f} vs {pgd.get('original', 0):.3f}"
    yield judge("PGD success (unlearned+guard) / original", m, None, Goal("<=", 0.333), ratio, detail)
    detail = f"{r.fit.steps} steps, {r.fit.rounds} round(s)"
    yield judge("fit wall time (s)", m, None, Goal("<=", 180), r.fit.seconds, detail)


def serve_targets(s: ServeLoad) -> Iterator[Target]:
    m, h = s.model or "?", s.http
    detail = f"{h.images_per_s:.0f} vs {max(s.in_process_by_threads.values()):.0f} images/s"
    yield judge("HTTP / in-process images/s", m, None, Goal(">=", 0.7), s.ratio, detail)
    yield judge(
        "HTTP p99 / p50 latency", m, None, Goal("<=", 3), s.p99_over_p50, f"{h.p99_ms:.1f} vs {h.p50_ms:.1f} ms"
    )
    yield judge("serve start-up to ready (s)", m, None, Goal("<=", 5), s.startup_to_ready_s, "spawn to GET /readyz 200")
    yield judge("HTTP errors", m, None, Goal("<=", 0), h.errors, f"of {h.requests} requests")


def all_targets(res: Results) -> list[Target]:
    out = list(inference_targets(res.inference, res.machine.gemm_peak)) if res.inference else []
    out += [t for r in (res.unlearning.rows if res.unlearning else ()) for t in unlearning_targets(r)]
    return out + (list(serve_targets(res.serve)) if res.serve else [])
