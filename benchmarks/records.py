"""Typed records of one run: a frozen dataclass per row of every section, and the run itself.

Sections return records and the harness composes them; the targets and the report read them.
``load`` rebuilds a run from its JSON (written by ``dataclasses.asdict``) for ``--report-only``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from benchmarks.config import FOREIGN_LIMIT

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
class Failure:
    """Something not measured: a backend this machine lacks (no model, no batch), or one that failed."""

    name: str
    reason: str
    model: Optional[str] = None
    batch: Optional[int] = None


@dataclass(frozen=True)
class Inference:
    rows: tuple[InferenceRow, ...] = ()
    models: tuple[ModelInfo, ...] = ()
    guard: tuple[GuardRow, ...] = ()
    memory: tuple[MemoryRow, ...] = ()
    failures: tuple[Failure, ...] = ()

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

    @property
    def worst_flip(self) -> tuple[Optional[str], Optional[float]]:
        return max(self.flips_non_target.items(), key=lambda kv: kv[1], default=(None, None))


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

    @property
    def ratio(self) -> float:
        return self.http.images_per_s / max(self.in_process_by_threads.values())

    @property
    def p99_over_p50(self) -> float:
        return self.http.p99_ms / self.http.p50_ms


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
    return value


def load(cls: type[T], data: dict[str, Any]) -> T:
    """A record from its JSON; keys the record does not have are ignored, missing ones take their defaults."""
    hints, names = typing.get_type_hints(cls), {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
