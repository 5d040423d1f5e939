"""Inference backends as zero-argument callables over one fixed batch of latents.

Every backend runs the same work: the guarded module (latent guard in shift mode, generator,
uint8 NHWC image), either in PyTorch or as the exported guarded ONNX graph. GPU backends are
written against the real APIs (torch CUDA, ONNX Runtime's CUDA and TensorRT execution
providers, a TensorRT engine built by ``export.tensorrt``) and are skipped with the reason when
this machine lacks what they need.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.models import BenchModel, write_run
from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.module import ExportModule, build_module
from feature_unlearn.export.source import load_source
from feature_unlearn.export.validate import session

Fn = Callable[[], object]
CUDA_EP, TRT_EP, CPU_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class Artifacts:
    """One model exported twice (guarded, and plain as a zoo id exports) plus its PyTorch modules."""

    model: BenchModel
    guarded_dir: Path  # model.onnx + manifest.json (+ model.plan on a TensorRT machine)
    plain_dir: Path
    guarded: ExportModule  # shift guard -> generator -> uint8
    plain: ExportModule  # no target vector (guard off), what `unlearn-cli export <zoo id>` exports
    plans: dict[str, Path]  # "tensorrt-fp32" / "tensorrt-fp16" -> model.plan (GPU machines with TensorRT)
    plan_errors: dict[str, str]
    export_seconds: float


def _engines(run: Path, tmp: Path, name: str) -> tuple[dict[str, Path], dict[str, str]]:
    """Guarded TensorRT engines built by ``export_model`` (fp32 graph, and fp16 generator + fp32 guard)."""
    plans, errors = {}, {}
    for backend, fp16 in (("tensorrt-fp32", False), ("tensorrt-fp16", True)):
        out = tmp / f"{name}-{backend}"
        try:
            export_model(ExportConfig(source=str(run), out=out, fp16=fp16, tensorrt=True))
            plans[backend] = out / "model.plan"
        except Exception as exc:  # noqa: BLE001 - reported as that backend's failure
            errors[backend] = f"{type(exc).__name__}: {exc}"[:400]
    return plans, errors


def prepare(model: BenchModel, tmp: Path, tensorrt: bool) -> Artifacts:
    runs = {g: write_run(tmp / f"{model.name}-run-{g}", model, guarded=g) for g in (True, False)}
    dirs = {g: tmp / f"{model.name}-onnx-{g}" for g in (True, False)}
    summary = export_model(ExportConfig(source=str(runs[True]), out=dirs[True]))
    export_model(ExportConfig(source=str(runs[False]), out=dirs[False]))
    plans, errors = _engines(runs[True], tmp, model.name) if tensorrt else ({}, {})
    src, plain = load_source(str(runs[True])), load_source(str(runs[False]))
    return Artifacts(model, dirs[True], dirs[False], build_module(src.generator, src.guard, "shift"),
                     build_module(plain.generator, None, "off"), plans, errors, float(summary["export_seconds"]))  # fmt: skip


def gpu_availability() -> tuple[list[str], list[dict[str, str]]]:
    """The GPU backends this machine can run, and a reason for each one it cannot."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    cuda = torch.cuda.is_available()
    no_cuda = "no CUDA device (torch.cuda.is_available() is False)"
    reasons = {
        "torch-cuda-eager": None if cuda else no_cuda,
        "torch-cuda-compile": None if cuda else no_cuda,
        "onnxruntime-cuda": None if cuda and CUDA_EP in providers else
        (no_cuda if not cuda else f"{CUDA_EP} not in this onnxruntime build ({providers}); install onnxruntime-gpu"),
        "onnxruntime-tensorrt": None if cuda and TRT_EP in providers else
        (no_cuda if not cuda else f"{TRT_EP} not in this onnxruntime build ({providers})"),
    }  # fmt: skip
    trt_reason = (
        no_cuda
        if not cuda
        else (None if importlib.util.find_spec("tensorrt") else "the tensorrt package is not installed")
    )
    reasons |= {"tensorrt-fp32": trt_reason, "tensorrt-fp16": trt_reason}
    ok = [k for k, v in reasons.items() if v is None]
    return ok, [{"backend": k, "reason": v} for k, v in reasons.items() if v is not None]


def torch_fn(module: torch.nn.Module, z: torch.Tensor, sync: bool = False) -> Fn:
    @torch.inference_mode()
    def run() -> object:
        out = module(z)
        if sync:
            torch.cuda.synchronize()
        return out

    return run


def _compiled(module: torch.nn.Module, mode: str) -> Callable[..., Any]:
    """torch.compile with the named configuration (see config.COMPILE_MODES)."""
    if mode == "default":
        return torch.compile(module)
    if mode == "max-autotune":  # CUDA graphs off: they only exist on GPUs and would pin the batch's memory
        return torch.compile(module, mode="max-autotune-no-cudagraphs")
    if mode == "freezing":  # as compile options (not a config patch around the call): a distinct backend to dynamo,
        return torch.compile(module, options={"freezing": True})  # so it never reuses the default compilation
    raise ValueError(f"unknown compile mode {mode!r}")


def compile_name(mode: str) -> str:
    return "torch-compile" if mode == "default" else f"torch-compile-{mode}"


def ort_fn(path: Path, z: np.ndarray, threads: int, providers: list[Any] | None = None) -> Fn:
    sess = session(path, providers=providers, threads=threads)
    wanted = providers[0] if providers else CPU_EP
    wanted = wanted[0] if isinstance(wanted, tuple) else wanted
    if sess.get_providers()[0] != wanted:  # ONNX Runtime falls back to CPU silently
        raise RuntimeError(f"ONNX Runtime runs {sess.get_providers()[0]}, not {wanted}")
    feed = {"z": z}
    return lambda: sess.run(None, feed)


def cpu_fns(
    art: Artifacts, z: torch.Tensor, threads: int, compile_modes: tuple[str, ...], bare: bool = False
) -> dict[str, Fn]:
    """The CPU contenders; ``bare`` adds the generator alone in eager PyTorch (float output, no guard)."""
    fns: dict[str, Fn] = {"torch-eager": torch_fn(art.guarded, z)}
    if bare:
        fns["torch-eager-generator"] = torch_fn(art.model.generator, z)
    for mode in compile_modes:
        compiled = _compiled(art.guarded, mode)
        fns[compile_name(mode)] = torch_fn(compiled, z)  # type: ignore[arg-type]
    fns["onnxruntime-cpu"] = ort_fn(art.guarded_dir / "model.onnx", z.numpy(), threads)
    return fns


def _gpu_builders(art: Artifacts, z: torch.Tensor, tmp: Path) -> dict[str, Callable[[], Fn]]:
    onnx_path, z_np = art.guarded_dir / "model.onnx", z.numpy()
    trt_opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp / "ort-trt-cache")}

    def cuda_module() -> torch.nn.Module:
        return copy.deepcopy(art.guarded).cuda()

    return {
        "torch-cuda-eager": lambda: torch_fn(cuda_module(), z.cuda(), sync=True),
        "torch-cuda-compile": lambda: torch_fn(torch.compile(cuda_module()), z.cuda(), sync=True),  # type: ignore[arg-type]
        "onnxruntime-cuda": lambda: ort_fn(onnx_path, z_np, 1, [CUDA_EP, CPU_EP]),
        "onnxruntime-tensorrt": lambda: ort_fn(onnx_path, z_np, 1, [(TRT_EP, trt_opts), CUDA_EP, CPU_EP]),
        "tensorrt-fp32": lambda: TrtEngine(art.plans["tensorrt-fp32"]).bind(z.cuda()),
        "tensorrt-fp16": lambda: TrtEngine(art.plans["tensorrt-fp16"]).bind(z.cuda()),
    }


def gpu_fns(art: Artifacts, z: torch.Tensor, available: list[str], tmp: Path) -> tuple[dict[str, Fn], dict[str, str]]:
    """The available GPU contenders, and the error of each that could not be set up."""
    fns: dict[str, Fn] = {}
    failed = {k: v for k, v in art.plan_errors.items() if k in available}
    for name, build in _gpu_builders(art, z, tmp).items():
        if name not in available or name in failed:
            continue
        try:
            fns[name] = build()
        except Exception as exc:  # noqa: BLE001 - a backend that cannot start is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {exc}"[:400]
    return fns, failed


class TrtEngine:
    """A serialized TensorRT engine run with TensorRT 10's tensor-address API on a torch CUDA stream."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt

        self.trt, self.logger = trt, trt.Logger(trt.Logger.WARNING)  # the logger must outlive the runtime
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT cannot deserialize {plan}")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.stream = torch.cuda.Stream()

    def _dtype(self, name: str) -> torch.dtype:
        np_type = self.trt.nptype(self.engine.get_tensor_dtype(name))
        return torch.from_numpy(np.empty(0, dtype=np_type)).dtype

    def bind(self, z: torch.Tensor) -> Fn:
        """Set the input shape, allocate outputs and return the call that runs one batch."""
        ctx, trt = self.context, self.trt
        self.outputs: dict[str, torch.Tensor] = {}  # kept alive with the engine
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                ctx.set_input_shape(name, tuple(z.shape))
                ctx.set_tensor_address(name, z.data_ptr())
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                buf = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtype(name), device="cuda")
                self.outputs[name] = buf
                ctx.set_tensor_address(name, buf.data_ptr())
        self._z = z

        def run() -> object:
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self.stream.synchronize()
            return self.outputs

        return run
