"""Typed records of one run (a frozen dataclass per row of every section, and the run itself) and its targets.

Sections return records and the harness composes them; the targets and the report read them.
``load`` rebuilds a run from its JSON (written by ``dataclasses.asdict``) for ``--report-only``.
The targets are the goals of issues 3, 6 and 12, judged on a run's records: ratios, never pass/fail on
absolute speed. Each is built from the rows it reads, so it knows its model and batch and how much other
processes disturbed those rows: a disturbed speed target is reported, not judged.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from benchmarks.config import COMPILED, CPU_BACKENDS, FOREIGN_LIMIT
from benchmarks.failure import Failure
from benchmarks.resolution import ResolutionBench
from feature_unlearn.unlearn.stats import gap_interval

T = TypeVar("T")


@dataclass(frozen=True)
class Machine:
    command: str
    date: str
    cpu: str
    cores: int
    threads: int
    torch: str
    onnxruntime: str
    python: str
    gpu: Optional[str]
    load_start: float
    gemm_peak_start: float  # GFLOP/s; measured again at the end: the roofline uses the better
    gemm_peak_end: Optional[float] = None
    load_end: Optional[float] = None
    wall_s: Optional[float] = None
    foreign_cores_at_section_start: dict[str, float] = field(default_factory=dict)

    @property
    def gemm_peak(self) -> float:
        return max(self.gemm_peak_start, self.gemm_peak_end or 0.0)


@dataclass(frozen=True)
class InferenceRow:
    backend: str
    model: str
    batch: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    first_call_s: float  # compilation included
    gflops: float
    foreign_cores: float  # other processes' CPU use while it was timed


@dataclass(frozen=True)
class PrecisionRow:
    """A reduced-precision export of a model (``benchmarks.reduced``); its speed is in the inference rows."""

    model: str
    precision: str
    backend: str
    export_s: float
    image_max: int  # grey levels vs fp32 PyTorch, export validation's random batch of 300
    image_mean: float
    rate_shift_pp: Optional[float]  # largest |rate - fp32 rate| the quality gate measured
    rates: dict[str, tuple[float, Optional[float]]]  # attribute -> (fp32 %, reduced %)
    fid_change: Optional[float]  # FID relative to fp32's
    gate: Optional[str]  # the auditor that judged, or why the gate did not run
    load_s: float
    first_request_s: float
    gate_pixels: Optional[dict[str, float]] = None  # max, mean, images_over_4 vs the fp32 graph on the gate's latents
    fp32_below: Optional[int] = None  # bf16: batches under this run the artifact's fp32 graph (export's crossover)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    mflop_per_image: float
    z_dim: int
    export_seconds: float


@dataclass(frozen=True)
class GuardRow:
    backend: str
    model: str
    batch: int
    rounds: int
    guarded_ms: float  # medians over all calls
    unguarded_ms: float
    overhead: float  # median over rounds of (guarded block median / unguarded block median) − 1
    overhead_iqr: tuple[float, float]
    foreign_cores: float


@dataclass(frozen=True)
class MemoryRow:
    model: str
    backend: str
    batch: int
    steady_mb: Optional[float] = None  # after loading and a warm-up call
    peak_mb: Optional[float] = None  # during the calls
    hwm_mb: Optional[float] = None  # the process's high-water mark
    error: Optional[str] = None


@dataclass(frozen=True)
class Inference:
    rows: tuple[InferenceRow, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    guard: tuple[GuardRow, ...] = ()
    memory: tuple[MemoryRow, ...] = ()
    failures: tuple[Failure, ...] = ()
    precision: tuple[PrecisionRow, ...] = ()

    def __add__(self, other: Inference) -> Inference:
        return Inference(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))

    def find(self, backend: str, model: str, batch: int) -> Optional[InferenceRow]:
        return next((r for r in self.rows if (r.backend, r.model, r.batch) == (backend, model, batch)), None)


@dataclass(frozen=True)
class FitRow:
    device: str
    mode: str  # eager | compile
    precision: str
    steps_per_s: Optional[float] = None
    warmup_s: Optional[float] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class Ddp:
    """``unlearn-cli fit``: one process with ``threads`` threads vs torchrun's 2 processes × 1 thread (gloo)."""

    model: str
    steps: int
    global_batch: int
    threads: int
    one_process_steps_per_s: float
    two_process_steps_per_s: float


@dataclass(frozen=True)
class FitSpeed:
    model: str
    batch: int
    steps: int
    warmup: int
    rows: tuple[FitRow, ...] = ()
    ddp: Optional[Ddp] = None
    ddp_error: Optional[str] = None


@dataclass(frozen=True)
class FitRun:
    seconds: float
    steps: int
    rounds: int
    goal: float  # the labeller's target rate at which the fit stops
    goal_reached: bool


@dataclass(frozen=True)
class UnlearnRow:
    """A zoo generator fitted on its default feature, graded by the auditor."""

    model: str
    feature: str
    oracle: Optional[str]
    target_rate: dict[str, float]  # original, original+guard, unlearned, unlearned+guard, oracle
    fid: dict[str, float]
    flips_non_target: dict[str, float]
    pgd_success: dict[str, float]
    fit: FitRun
    run: str
    fid_without: dict[str, float] = field(default_factory=dict)  # FID against held-out data without the feature
    rate_shift: dict[str, float] = field(default_factory=dict)  # other attributes: unlearned+guard − original, pp
    kept: tuple[str, ...] = ()  # the fit's --keep attributes
    # FID against the same held-out images drawn without the feature (rendered faces only; evaluate's references)
    fid_counterfactual: dict[str, float] = field(default_factory=dict)
    pgd_l2: dict[str, float] = field(default_factory=dict)  # the verdict under the L2 budget
    replay: dict[str, float] = field(default_factory=dict)  # latents PGD found on the original, per model

    @property
    def worst_flip(self) -> tuple[Optional[str], Optional[float]]:
        return max(self.flips_non_target.items(), key=lambda kv: kv[1], default=(None, None))

    @property
    def worst_shift(self) -> tuple[Optional[str], Optional[float]]:
        return max(self.rate_shift.items(), key=lambda kv: abs(kv[1]), default=(None, None))


@dataclass(frozen=True)
class Unlearning:
    eval_n: int
    attack: dict[str, float]  # the PGD attack's eps, steps, starts
    rows: tuple[UnlearnRow, ...] = ()
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class HttpLoad:
    requests: int
    errors: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_image: float
    client_cpu_ms_per_image: float


@dataclass(frozen=True)
class ServeLoad:
    """``unlearn-cli serve`` under concurrent loopback clients vs the same runtime in process."""

    model: Optional[str]
    guard: str
    clients: int
    images_per_request: int
    seconds: float
    startup_to_ready_s: float
    http: HttpLoad
    mean_batch: float
    baseline_batch: int
    in_process_by_threads: dict[str, float]  # images/s at baseline_batch per ONNX Runtime thread count
    in_process_cpu_ms_per_image: float  # of the faster
    cpus: Optional[int]
    load_avg: float
    accept: str = "application/json"  # the response format the load asked for

    @property
    def ratio(self) -> float:
        return self.http.images_per_s / max(self.in_process_by_threads.values())


@dataclass(frozen=True)
class Results:
    machine: Machine
    config: dict[str, Any]  # BenchConfig.as_dict() of the run
    complete: bool = False  # False while sections are still to come
    inference: Optional[Inference] = None
    fit: Optional[FitSpeed] = None
    unlearning: Optional[Unlearning] = None
    serve: Optional[ServeLoad] = None
    serve_error: Optional[str] = None
    resolution: Optional[ResolutionBench] = None

    def noisy(self) -> list[str]:
        """The measurements other processes disturbed (CPU they used during timed rounds and at section starts)."""
        rows = self.inference.rows if self.inference else ()
        points = sorted({(r.model, r.batch, r.foreign_cores) for r in rows if r.foreign_cores > FOREIGN_LIMIT})
        starts = self.machine.foreign_cores_at_section_start.items()
        return [f"{m} batch {b} ({c:.2f} cores)" for m, b, c in points] + [
            f"{k} section start ({v:.2f} cores)" for k, v in starts if v > FOREIGN_LIMIT
        ]


def _build(hint: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` names: records, tuples of them, optionals."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None or hint is Any:
        return value
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _build(args[0], value)
    if dataclasses.is_dataclass(hint):
        return load(typing.cast(type, hint), value)
    if typing.get_origin(hint) is tuple:
        return tuple(_build(args[0], v) for v in value) if args[-1] is Ellipsis else tuple(value)
    if typing.get_origin(hint) is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    return value


def load(cls: type[T], data: dict[str, Any]) -> T:
    """A record from its JSON; keys the record does not have are ignored, missing ones take their defaults."""
    hints, names = typing.get_type_hints(cls), {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _build(hints[k], v) for k, v in data.items() if k in names})


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


REDUCED_BACKENDS = ("onnxruntime-cpu-int8", "pytorch-cpu-bf16")  # benchmarks.reduced.BACKEND


def precision_targets(inf: Inference, m: str) -> Iterator[Target]:
    """Issue 15, for every reduced-precision backend of ``m``: speed against ONNX Runtime fp32 and what it costs."""
    rows = [r for r in inf.rows if r.model == m and r.batch == BATCH and r.backend in REDUCED_BACKENDS]
    if not rows:
        yield judge("best reduced precision / onnxruntime-cpu", m, BATCH, Goal(">=", 1.6, "x"), None, "none exported")
    for backend in sorted({r.backend for r in rows}):
        yield from _precision_row_targets(inf, m, backend)


def _precision_row_targets(inf: Inference, m: str, backend: str) -> Iterator[Target]:
    yield speed(inf, backend, "onnxruntime-cpu", m, BATCH, Goal(">=", 1.6, "x"), "; both guarded, uint8 out")
    a, b = inf.find(backend, m, 1), inf.find("onnxruntime-cpu", m, 1)
    ratio, detail = (a.p50_ms / b.p50_ms, f"{a.p50_ms:.3f} vs {b.p50_ms:.3f} ms") if a and b else (None, "no batch 1")
    yield judge(f"batch-1 p50, {backend} / onnxruntime-cpu", m, 1, Goal("<=", 1.0), ratio, detail)
    p = next((r for r in inf.precision if r.model == m and r.backend == backend), None)
    if p is None:
        return
    yield judge(f"{p.precision}: image max error (grey levels)", m, None, Goal("<=", 4), p.image_max, "vs fp32, 300")
    yield judge(f"{p.precision}: image mean error (grey levels)", m, None, Goal("<=", 0.5), p.image_mean, "vs fp32")
    yield judge(f"{p.precision}: residual rate shift (pp)", m, None, Goal("<=", 0.2), p.rate_shift_pp, str(p.gate))
    yield judge(f"{p.precision}: export time (s)", m, None, Goal("<=", 120), p.export_s, "quality gate included")
    yield judge(f"{p.precision}: first request after load (s)", m, None, Goal("<=", 2), p.first_request_s, "")


def inference_targets(inf: Inference, peak: float) -> Iterator[Target]:
    for m in (i.name for i in inf.models):
        if any(r.model == m and r.batch == BATCH and r.backend in CPU_BACKENDS for r in inf.rows):
            yield from cpu_targets(inf, m, peak)
            yield from precision_targets(inf, m)
        if any(r.model == m and r.backend == "torch-cuda-eager" for r in inf.rows):
            yield speed(inf, "onnxruntime-tensorrt-fp16", "torch-cuda-eager", m, GPU_BATCH, X3)
    if inf.models and not any(r.backend == "torch-cuda-eager" for r in inf.rows):
        yield judge("onnxruntime-tensorrt-fp16 / torch-cuda-eager", "all", GPU_BATCH, X3, None, "no CUDA device here")


def unlearning_targets(r: UnlearnRow, starts: int = 0, eval_n: int = 0) -> Iterator[Target]:
    """Every unlearning target of one row; ``starts`` / ``eval_n`` (attack starts, latents graded) give the
    robust gaps their 95% interval (0: unknown, none shown)."""
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
    yield from _keep_targets(r)
    attribute, flip = r.worst_flip
    yield judge("worst attribute flip on non-target samples", m, None, Goal("<=", 0.05), flip, str(attribute))
    ratio = pgd["unlearned+guard"] / pgd["original"] if pgd.get("original") else None
    detail = f"{pgd.get('unlearned+guard', 0):.3f} vs {pgd.get('original', 0):.3f}"
    yield judge("PGD success (unlearned+guard) / original", m, None, Goal("<=", 0.333), ratio, detail)
    yield from _robust_targets(r, starts, eval_n)
    detail = f"{r.fit.steps} steps, {r.fit.rounds} round(s)"
    yield judge("fit wall time (s)", m, None, Goal("<=", 300), r.fit.seconds, detail)


ROBUST_GAPS = (  # issue 9: (figure, model, allowed points over the oracle's)
    ("PGD L∞", "unlearned+guard", 2),
    ("PGD L∞", "unlearned+guard+check", 1),
    ("PGD L2", "unlearned+guard", 2),
    ("PGD L2", "unlearned+guard+check", 1),
    ("replay", "unlearned+guard", 1),
    ("target rate, no guard", "unlearned", 1),
)


def _robust_targets(r: UnlearnRow, starts: int, eval_n: int) -> Iterator[Target]:
    """Issue 9: every attack figure, and the fine-tuned generator alone, within a few points of the oracle's.

    The verdict is the measured gap; its 95% interval (Newcombe) says whether a miss is beyond the noise of
    the number of starts."""
    figures = {"PGD L∞": r.pgd_success, "PGD L2": r.pgd_l2, "replay": r.replay, "target rate, no guard": r.target_rate}
    for what, model, points in ROBUST_GAPS:
        got, oracle = figures[what].get(model), figures[what].get("oracle")
        if got is None or oracle is None:
            continue
        gap = 100 * (got - oracle)
        detail = f"{100 * got:.2f}% vs oracle {100 * oracle:.2f}%"
        n = eval_n if what == "target rate, no guard" else starts
        if n:
            lo, hi = gap_interval(got, n, oracle, n)
            detail += f" (gap 95% CI {100 * lo:+.1f} to {100 * hi:+.1f} pp, n = {n})"
        yield judge(f"{what} ({model}) − oracle's", r.model, None, Goal("<=", points, " pp"), gap, detail)


def _keep_targets(r: UnlearnRow) -> Iterator[Target]:
    """Issue 11: fidelity against data without the feature, and the other attributes' rates kept."""
    m = r.model
    for what, w in (("without the feature", r.fid_without), ("vs the same images without it", r.fid_counterfactual)):
        if "oracle" in w and "unlearned+guard" in w:
            detail = f"{w['unlearned+guard']:.3f} vs {w['oracle']:.3f}"
            ratio = w["unlearned+guard"] / w["oracle"]
            yield judge(f"FID {what}, unlearned+guard / oracle", m, None, Goal("<=", 1.25), ratio, detail)
    attribute, shift = r.worst_shift
    if attribute is not None and shift is not None:
        yield judge("largest other-attribute rate shift (pp)", m, None, Goal("<=", 2), abs(shift), str(attribute))
    for a in r.kept:
        if a in r.rate_shift:
            yield judge(f"kept {a} rate shift (pp)", m, None, Goal("<=", 1.5), abs(r.rate_shift[a]), "--keep")


def serve_targets(s: ServeLoad) -> Iterator[Target]:
    m, h = s.model or "?", s.http
    detail = f"{h.images_per_s:.0f} vs {max(s.in_process_by_threads.values()):.0f} images/s"
    yield judge("HTTP / in-process images/s", m, None, Goal(">=", 0.7), s.ratio, detail)
    yield judge(
        "HTTP p99 / p50 latency", m, None, Goal("<=", 3), h.p99_ms / h.p50_ms, f"{h.p99_ms:.1f} vs {h.p50_ms:.1f} ms"
    )
    yield judge("serve start-up to ready (s)", m, None, Goal("<=", 5), s.startup_to_ready_s, "spawn to GET /readyz 200")
    yield judge("HTTP errors", m, None, Goal("<=", 0), h.errors, f"of {h.requests} requests")


def all_targets(res: Results) -> list[Target]:
    out = list(inference_targets(res.inference, res.machine.gemm_peak)) if res.inference else []
    if res.unlearning:
        starts, n = int(res.unlearning.attack.get("starts", 0)), res.unlearning.eval_n
        out += [t for r in res.unlearning.rows for t in unlearning_targets(r, starts, n)]
    return out + (list(serve_targets(res.serve)) if res.serve else [])
