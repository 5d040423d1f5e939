"""Inference: images/s and p50/p99 latency per (model, backend, batch), the guard's overhead and peak memory.

Every backend runs the guarded module (shift guard -> generator -> uint8 NHWC): eager PyTorch
and torch.compile in process, ONNX Runtime on its export through the service's own loader
(``SafeGenerator``: its sessions, input checks and outputs), so the figure is what users run. The
guard is a random unit direction with t = 1 (it flags ~16 % of N(0, I) latents): its cost depends
on neither. GPU backends run where torch sees a CUDA device.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import measure, reduced
from benchmarks.config import FOREIGN_LIMIT, Run, compile_name
from benchmarks.measure import Fn, Timing, interleave, one_line
from benchmarks.records import Failure, GuardRow, Inference, InferenceRow, MemoryRow, ModelInfo
from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.module import build_module
from feature_unlearn.export.tensorrt import engine_runner
from feature_unlearn.serve.runtime import SafeGenerator
from feature_unlearn.unlearn.artifacts import GuardRecord, ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.metrics import latents
from feature_unlearn.unlearn.models import z_dim_of
from feature_unlearn.unlearn.zoo import load_generator_with_meta

# "freezing" as options, not a config patch: dynamo then never reuses the default compilation.
# CUDA graphs stay off: they exist on GPUs only and would pin the batch's memory.
COMPILE: dict[str, dict[str, Any]] = {
    "default": {},
    "freezing": {"options": {"freezing": True}},
    "max-autotune": {"mode": "max-autotune-no-cudagraphs"},
}
GPU_BACKENDS = (
    "torch-cuda-eager",
    "torch-cuda-compile",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "onnxruntime-tensorrt-fp16",
    "tensorrt-fp16",
    "tensorrt-bf16",
)
ENGINES = ("fp16", "bf16")  # native TensorRT engines, each built by export from its own graph
BARE_BATCH = 64  # the generator alone (float output, no guard) is timed at the targets' batch only


def guarded(
    name: str, guard: bool = True, trust_code: bool = False
) -> tuple[torch.nn.Module, ModelRecord, torch.nn.Module]:
    """The zoo (or a user's ``package.module:factory``) generator, a fit run's record of it (with a random guard)
    and the module the export holds."""
    g, meta = load_generator_with_meta(name, trust_code)
    u = np.random.default_rng(0).standard_normal(z_dim_of(g))
    vector = GuardRecord(direction=(tuple((u / np.linalg.norm(u)).tolist()),), threshold=(1.0,), features=("bench",))
    record = ModelRecord(kind="generator", arch=meta.record.arch, dataset=meta.record.dataset)
    if guard:
        record = dataclasses.replace(record, guard=vector, base_model=name, base_sha256=meta.sha256)
    return g.eval(), record, build_module(g, vector if guard else None, "shift" if guard else "off")


def export_zoo(
    name: str,
    out: Path,
    guard: bool = True,
    fp16: bool = False,
    precision: str = "fp32",
    gate_samples: int = 10_000,
    trust_code: bool = False,
    tensorrt: bool = False,
) -> dict[str, Any]:
    """``unlearn-cli export`` of a run holding the zoo generator (the run, named after it, goes beside ``out``)."""
    g, record, _ = guarded(name, guard, trust_code)
    run = out.with_name(out.name + "-run") / name.replace(":", "-")
    save_checkpoint(run / "generator", g.state_dict(), record)
    cfg = ExportConfig(source=str(run), out=out, fp16=fp16, precision=precision, gate_samples=gate_samples)
    return export_model(dataclasses.replace(cfg, trust_code=trust_code, tensorrt=tensorrt))


def engines(name: str, tmp: Path, trust_code: bool) -> tuple[dict[str, Path], dict[str, str]]:
    """``ENGINES`` exported with ``--tensorrt`` (quality gate on 1,000 latents: the engine is what is timed), and
    why each that could not be built was not."""
    built, failed = {}, {}
    for p in ENGINES:
        out = tmp / f"{name.replace(':', '-')}-{p}-trt"
        try:
            export_zoo(name, out, precision=p, gate_samples=1_000, trust_code=trust_code, tensorrt=True)
            built[f"{p}-trt"] = out
        except Exception as exc:  # noqa: BLE001 - a missing tensorrt or a failed build is reported, not fatal
            failed[f"tensorrt-{p}"] = one_line(exc)
    return built, failed


def engine_fn(export: Path, z: np.ndarray) -> Fn:
    run = engine_runner(export / "model.plan")
    return lambda: run(z)


def torch_fn(module: Callable[[torch.Tensor], Any], z: torch.Tensor, sync: bool = False) -> Fn:
    @torch.inference_mode()
    def run() -> object:
        out = module(z)
        if sync:
            torch.cuda.synchronize()
        return out

    return run


def torch_backend(name: str, backend: str, batch: int, threads: int, trust_code: bool = False) -> Fn:
    """The guarded module of ``name`` on a batch, eager or compiled (the memory probe's torch process)."""
    torch.set_num_threads(threads)
    g, _, module = guarded(name, trust_code=trust_code)
    return torch_fn(torch.compile(module) if backend == "torch-compile" else module, latents(batch, z_dim_of(g), 0))


def ort_fn(export: Path, z: np.ndarray, threads: int, providers: str = "cpu") -> Fn:
    """The service's runtime on ``export``; ONNX Runtime's silent fallback to another provider is an error."""
    gen = SafeGenerator.load(export, providers=providers, threads=threads)
    if gen.fallback:
        raise RuntimeError(gen.fallback)
    return lambda: gen.generate(z=z)


@dataclasses.dataclass(frozen=True)
class Model:
    info: ModelInfo
    modules: dict[str, torch.nn.Module]  # guarded, plain (no guard, as a zoo id exports), generator
    exports: dict[str, Path]  # guarded, plain (CUDA: fp16, fp16-trt, bf16-trt), and the reduced precisions
    precision: Inference  # the reduced precisions' rows and refusals


def prepare(name: str, tmp: Path, cuda: bool, cfg: Run) -> Model:
    trust, stem = cfg.trust_code, name.replace(":", "-")
    exports = {k: tmp / f"{stem}-{k}" for k in ("guarded", "plain")}
    summary = export_zoo(name, exports["guarded"], trust_code=trust)
    export_zoo(name, exports["plain"], guard=False, trust_code=trust)
    trt: tuple[dict[str, Path], dict[str, str]] = ({}, {})
    if cuda:
        trt = engines(name, tmp, trust)
        exports["fp16"] = _fp16_export(name, tmp / f"{stem}-fp16", trt[0], trust)
    g, _, module = guarded(name, trust_code=trust)
    mflop = measure.flops_per_image(g, z_dim_of(g)) / 1e6
    info = ModelInfo(name, round(mflop, 3), z_dim_of(g), round(float(summary["export_seconds"]), 2))
    low, rows, failures = reduced.exports(name, tmp, cfg.s.precisions, _export_reduced(cfg), cfg.threads)
    modules = {"guarded": module, "plain": guarded(name, guard=False, trust_code=trust)[2], "generator": g}
    failures += tuple(Failure(b, e, name) for b, e in trt[1].items())
    return Model(info, modules, exports | low | trt[0], Inference(precision=rows, failures=failures))


def _fp16_export(name: str, out: Path, built: dict[str, Path], trust: bool) -> Path:
    """The fp16 graph ONNX Runtime's TensorRT provider runs: the fp16 engine's export holds it as its model.onnx,
    so it is exported again only when that engine could not be built."""
    if "fp16-trt" in built:
        return built["fp16-trt"]
    export_zoo(name, out, fp16=True, trust_code=trust)
    return out


def _export_reduced(cfg: Run) -> reduced.Export:
    return lambda name, out, p: export_zoo(
        name, out, precision=p, gate_samples=cfg.s.gate_samples, trust_code=cfg.trust_code
    )


def compiled(module: torch.nn.Module, mode: str, z: torch.Tensor) -> Callable[[], Fn]:
    return lambda: torch_fn(torch.compile(module, **COMPILE[mode]), z)


def contenders(m: Model, z: torch.Tensor, cfg: Run, cuda: bool) -> dict[str, Callable[[], Fn]]:
    """How to build each backend's call on this batch; compilation happens at the first call (warm-up)."""
    zn, guarded_onnx = z.numpy(), m.exports["guarded"]
    fns: dict[str, Callable[[], Fn]] = {"torch-eager": lambda: torch_fn(m.modules["guarded"], z)}
    if len(z) == BARE_BATCH:
        fns["torch-eager-generator"] = lambda: torch_fn(m.modules["generator"], z)
    for mode in cfg.s.compile_modes:
        fns[compile_name(mode)] = compiled(m.modules["guarded"], mode, z)
    fns["onnxruntime-cpu"] = lambda: ort_fn(guarded_onnx, zn, cfg.threads)
    for p in ("int8", "bf16"):
        if p in m.exports:  # the service's loader picks ONNX Runtime (int8) or the PyTorch program (bf16)
            fns[reduced.BACKEND[p]] = (lambda path: lambda: ort_fn(path, zn, cfg.threads))(m.exports[p])
    if cuda:
        cuda_module = copy.deepcopy(m.modules["guarded"]).cuda()
        fns["torch-cuda-eager"] = lambda: torch_fn(cuda_module, z.cuda(), sync=True)
        fns["torch-cuda-compile"] = lambda: torch_fn(torch.compile(cuda_module), z.cuda(), sync=True)
        fns["onnxruntime-cuda"] = lambda: ort_fn(guarded_onnx, zn, 1, "cuda")
        fns["onnxruntime-tensorrt"] = lambda: ort_fn(guarded_onnx, zn, 1, "tensorrt")
        fns["onnxruntime-tensorrt-fp16"] = lambda: ort_fn(m.exports["fp16"], zn, 1, "tensorrt")
        for p in ENGINES:
            if f"{p}-trt" in m.exports:
                fns[f"tensorrt-{p}"] = (lambda path: lambda: engine_fn(path, zn))(m.exports[f"{p}-trt"])
    return fns


def build(builders: dict[str, Callable[[], Fn]]) -> tuple[dict[str, Fn], dict[str, str]]:
    """The calls that could be built, and the error of each that could not."""
    fns, failed = {}, {}
    for name, make in builders.items():
        try:
            fns[name] = make()
        except Exception as exc:  # noqa: BLE001 - a backend that cannot start is reported, not fatal
            failed[name] = one_line(exc)
    return fns, failed


def foreign(timings: dict[str, Timing]) -> float:
    return max((t.foreign_cores for t in timings.values()), default=0.0)


def timed(fns: dict[str, Fn], cfg: Run, seed: int) -> tuple[dict[str, Timing], dict[str, str]]:
    """``interleave``, again (up to ``retries`` times) while other processes disturb it; the least disturbed wins."""
    s, runs = cfg.s, [interleave(fns, cfg.s.warmup, cfg.s.seconds, cfg.s.calls, cfg.s.rounds, seed)]
    while foreign(runs[-1][0]) > FOREIGN_LIMIT and len(runs) <= s.retries:  # NaN (no /proc/stat): undisturbed
        print(f"    other processes used {foreign(runs[-1][0]):.2f} cores: again in {s.retry_wait_s:.0f} s", flush=True)
        time.sleep(s.retry_wait_s)
        runs.append(interleave(fns, 1, s.seconds, s.calls, s.rounds, seed + len(runs)))
    return min(runs, key=lambda run: foreign(run[0]))


def guard_overhead(m: Model, z: torch.Tensor, cfg: Run) -> list[GuardRow]:
    """Guarded vs unguarded, same backend, in many short rounds: neighbouring blocks cancel the machine's drift."""
    s, rounds, zn, rows = cfg.s, 8 * cfg.s.rounds, z.numpy(), []  # rounds of a few calls each
    pairs = {
        "onnxruntime-cpu": [ort_fn(m.exports[k], zn, cfg.threads) for k in ("guarded", "plain")],
        "torch-eager": [torch_fn(m.modules[k], z) for k in ("guarded", "plain")],
    }
    for backend, (g, u) in pairs.items():
        t, _ = interleave({"g": g, "u": u}, s.warmup, s.overhead_seconds / 2, (3 * rounds, 25 * rounds), rounds)
        ratios = [
            statistics.median(a) / statistics.median(b) for a, b in zip(t["g"].rounds, t["u"].rounds, strict=True)
        ]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        guarded_ms, plain_ms = round(t["g"].ms(50), 4), round(t["u"].ms(50), 4)
        overhead, iqr = round(statistics.median(ratios) - 1, 4), (round(q1 - 1, 4), round(q3 - 1, 4))
        rows.append(
            GuardRow(backend, m.info.name, len(z), rounds, guarded_ms, plain_ms, overhead, iqr, t["g"].foreign_cores)
        )
    return rows


def bench_batch(m: Model, batch: int, cfg: Run, cuda: bool) -> Inference:
    torch._dynamo.reset()  # each batch compiles afresh, as a service with one batch size would
    z = latents(batch, m.info.z_dim, cfg.seed + batch)
    fns, failed = build(contenders(m, z, cfg, cuda))
    timings, errors = timed(fns, cfg, cfg.seed + batch)
    speeds = ", ".join(f"{b} {batch / t.median_s:.0f}/s" for b, t in timings.items())
    print(f"  {m.info.name} batch {batch}: {speeds}", flush=True)
    rows = []
    for backend, t in timings.items():
        ips = batch / t.median_s
        gflops = round(m.info.mflop_per_image * ips / 1e3, 2)
        times = round(ips, 1), round(t.ms(50), 3), round(t.ms(99), 3), len(t.samples), round(t.warmup[0], 3)
        rows.append(InferenceRow(backend, m.info.name, batch, *times, gflops, t.foreign_cores))
    failures = tuple(Failure(b, e, m.info.name, batch) for b, e in (failed | errors).items())
    return Inference(rows=tuple(rows), guard=tuple(guard_overhead(m, z, cfg)), failures=failures)


def bench_model(name: str, cfg: Run, tmp: Path, cuda: bool) -> Inference:
    print(f"inference: {name}", flush=True)
    m = prepare(name, tmp, cuda, cfg)
    part = Inference(models=(m.info,)) + m.precision
    for batch in cfg.batch_sizes:
        part += bench_batch(m, batch, cfg, cuda)
    if cfg.runs("memory"):  # at the largest batch, one fresh process per backend
        n, onnx = max(cfg.batch_sizes), m.exports["guarded"]
        mem = [
            MemoryRow(name, b, n, **measure.memory(name, b, onnx, n, cfg.threads, cfg.trust_code))
            for b in measure.MEMORY_BACKENDS
        ]
        part += Inference(memory=tuple(mem))
    return part


def run_inference(cfg: Run) -> Inference:
    """Every model of ``cfg``; the exports live in a temporary directory removed afterwards."""
    cuda = torch.cuda.is_available()
    missing = (
        () if cuda else tuple(Failure(b, "no CUDA device (torch.cuda.is_available() is False)") for b in GPU_BACKENDS)
    )
    result = Inference(failures=missing)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in cfg.model_names:
            result += bench_model(name, cfg, Path(tmp), cuda)
    return result
