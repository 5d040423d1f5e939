"""The frozen configuration of one ``unlearn-cli bench`` run, with its full and quick presets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_GENERATORS = ("mnist-vae", "mnist-dcgan", "faces-vae", "faces-dcgan")
CPU_BACKENDS = ("torch-eager", "torch-compile", "onnxruntime-cpu")
GPU_BACKENDS = ("torch-cuda-eager", "torch-cuda-compile", "onnxruntime-cuda", "onnxruntime-tensorrt",
                "tensorrt-fp32", "tensorrt-fp16")  # fmt: skip
# torch.compile configurations tried at every batch: "default" is torch.compile(m) as users write it;
# "freezing" turns on inductor's inference freezing (constant-folded, prepacked weights);
# "max-autotune" benchmarks kernel and GEMM-template choices at compile time.
COMPILE_MODES = ("default", "freezing", "max-autotune")
FOREIGN_LIMIT = 0.2  # cores other processes may use during a measurement before it counts as disturbed


@dataclass(frozen=True)
class BenchConfig:
    out: Path = Path("benchmarks")  # RESULTS.md and the PNG plots
    json_path: Path | None = None  # default: <out>/results.json
    work: Path = Path("runs/bench")  # fit runs and evaluations of the unlearning table
    quick: bool = False
    models: tuple[str, ...] = BASE_GENERATORS  # those without zoo weights use random stand-ins for speed only
    batches: tuple[int, ...] = (1, 16, 64, 256)
    compile_modes: tuple[str, ...] = COMPILE_MODES
    threads: int = os.cpu_count() or 1
    warmup: int = 3  # calls per backend before timing (compilation happens here)
    seconds_per_point: float = 2.0  # timed seconds per (model, backend, batch), spread over rounds
    min_calls: int = 15
    max_calls: int = 400
    rounds: int = 5  # contenders alternate round by round in a shuffled order
    overhead_seconds: float = 6.0  # timed seconds per guarded/unguarded comparison (the guard's cost is ~1 %: it needs many calls)
    retries: int = 2  # re-time a (model, batch) whose rounds other processes disturbed; keep the least disturbed
    retry_wait_s: float = 10.0
    memory: bool = True  # peak RSS per (model, backend) at the largest batch, in a fresh process
    inference: bool = True
    fit: bool = True
    fit_model: str | None = None  # default: faces-dcgan when shipped, else mnist-dcgan
    fit_steps: int = 40
    fit_warmup: int = 5
    fit_batch: int = 64
    ddp: bool = True
    ddp_steps: int = 200
    unlearning: bool = True
    unlearn_models: tuple[str, ...] = BASE_GENERATORS  # only those with zoo weights
    unlearn_steps: int | None = None  # None: the fit's default step budget
    unlearn_overrides: tuple[tuple[str, Any], ...] = ()  # extra FitConfig fields (quick: small collections)
    eval_n: int = 10_000
    attack_starts: int = 128
    attack_steps: int = 20
    serve: bool = True  # the HTTP load test of benchmarks/serve_load.py, when present
    serve_seconds: float = 20.0
    seed: int = 0

    @property
    def results_json(self) -> Path:
        return self.json_path or self.out / "results.json"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("out", "json_path", "work"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["unlearn_overrides"] = dict(self.unlearn_overrides)
        return d


QUICK: dict[str, Any] = {
    "quick": True, "models": ("mnist-vae", "mnist-dcgan"), "batches": (1, 64), "compile_modes": ("default",),
    "warmup": 2, "seconds_per_point": 0.3, "overhead_seconds": 0.6, "retries": 0, "min_calls": 5, "max_calls": 60, "rounds": 2, "memory": False,
    "fit_model": "mnist-dcgan", "fit_steps": 4, "fit_warmup": 2, "ddp_steps": 12,
    "unlearn_models": ("mnist-vae",), "unlearn_steps": 20, "eval_n": 500, "attack_starts": 16, "attack_steps": 5,
    "unlearn_overrides": (("steps_per_round", 20), ("n_collect", 600), ("probe", 200), ("pool", 4096),
                          ("checkpoint_every", 1000)),
    "serve": False, "out": Path("runs/bench-quick"), "work": Path("runs/bench-quick/work"),
}  # fmt: skip


def make_config(quick: bool = False, **overrides: Any) -> BenchConfig:
    """The full preset (or the quick one), with explicit overrides (None values are ignored)."""
    fields: dict[str, Any] = dict(QUICK) if quick else {}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**fields)
