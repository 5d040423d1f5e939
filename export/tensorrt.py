"""A serialized TensorRT engine from the validated ONNX (guarded import: CPU machines get a clear error).

Precision comes from the ONNX types: TensorRT 11 builds strongly typed networks only (the FP16
builder flag is gone), so ``--fp16`` means building from the fp16 graph and ``--precision bf16``
from the bf16 graph (``export.bf16_graph``). The engine is tied to
the TensorRT version and the GPU it was built on; the manifest records both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from feature_unlearn.export.errors import ExportError, TensorRTUnavailableError
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.unlearn.io import atomic_write


def _write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)


def _cuda_device() -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of export
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a TensorRTUnavailableError saying what is missing."""
    gpu = _cuda_device()
    if gpu is None:
        raise TensorRTUnavailableError(
            "--tensorrt needs a CUDA GPU; none is visible on this machine (export without --tensorrt)"
        )
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailableError(
            "--tensorrt needs the 'tensorrt' package (pip install 'feature-unlearn[gpu]')"
        ) from None
    return trt


def _network(trt: Any, builder: Any, onnx_path: Path) -> Any:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):  # TensorRT 10: opt in; TensorRT 11: the only kind
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING))
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    return network


def build_engine(onnx_path: Path, plan_path: Path, spec: ExportSpec, z_dim: int, cache_dir: Path) -> dict[str, Any]:
    """Build ``plan_path`` with the spec's batch profile and a timing cache in ``cache_dir``; returns what the
    manifest records."""
    cache_path = cache_dir / "timing.cache"
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder, onnx_path)
    config = builder.create_builder_config()
    lo, opt, hi = spec.trt_profile
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, (lo, z_dim), (opt, z_dim), (hi, z_dim))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build an engine (see its log above)")
    _write_bytes(plan_path, bytes(engine))
    _write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return {
        "plan": plan_path.name,
        "tensorrt": trt.__version__,
        "gpu": _cuda_device(),
        "profile": list(spec.trt_profile),
        "timing_cache": cache_path.name,
    }


def engine_runner(plan_path: Path, input_name: str = "z") -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A serialized engine as a function z float32 [N, z_dim] -> every output on the host (torch's CUDA buffers).

    For parity tests and the bench; serving runs engines through ONNX Runtime's TensorRT provider or Triton."""
    import torch

    trt = require_tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportError(f"{plan_path}: TensorRT cannot deserialize it (another TensorRT version or GPU?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = {trt.uint8: torch.uint8, trt.bool: torch.bool, trt.float32: torch.float32}
    stream = torch.cuda.Stream()

    def run(z: np.ndarray) -> dict[str, np.ndarray]:
        context.set_input_shape(input_name, z.shape)
        buffers = {input_name: torch.from_numpy(z).cuda()}
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
        for name, buffer in buffers.items():
            context.set_tensor_address(name, buffer.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{plan_path}: TensorRT failed to run the engine")
        stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in outputs}

    return run
