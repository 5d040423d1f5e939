"""bf16: the guarded module as a ``torch.export`` program, saved as JSON + safetensors.

ONNX Runtime has no bf16 convolution on CPU; oneDNN's bf16 kernels (avx512_bf16, AMX) do. The
whole ``ExportModule`` is exported (fp32 guard, bf16 channels_last generator, fp32 image check,
uint8 conversion) with a dynamic batch, then written without pickle: the program through
PyTorch's JSON serializer, every tensor through safetensors. ``serve.backends.load_program``
rebuilds it; export validates that rebuilt program, the one the runtime will run.

At small batches the program loses to ONNX Runtime: PyTorch spends tens of microseconds per op, oneDNN's
bf16 kernels need a batch to fill them, and the whole fp32 graph of a DCGAN runs in about 0.1 ms at batch
1. So export times both on this machine and records the batch below which the runtime hands a request to
the fp32 graph shipped beside the program (``fp32_below``): same guard, fp32 images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as save_tensors
from torch._export.serde import serialize as serde

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.serve.backends import (
    COMPILE_BUCKETS,
    COMPILE_OPTIONS,
    CONSTANT,
    PROGRAM_FORMAT,
    program_files,
)
from feature_unlearn.unlearn.io import atomic_write


def export_program(module: ExportModule, spec: ExportSpec) -> torch.export.ExportedProgram:
    z = torch.randn(spec.trace_batch, module.z_dim, generator=torch.Generator().manual_seed(spec.seed))
    batch = torch.export.Dim(spec.batch_axis, min=1)
    try:
        with torch.no_grad():
            return torch.export.export(module, (z,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types; all mean "this module does not export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.export (bf16 program) failed: {first[:300]}") from exc


def _tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    tensors = {k: v.detach().contiguous() for k, v in program.state_dict.items()}
    for k, v in program.constants.items():
        if not isinstance(v, torch.Tensor):
            raise ExportError(f"bf16 program: constant {k!r} is a {type(v).__name__}, not a tensor (not serialisable)")
        tensors[CONSTANT + k] = v.detach().contiguous()
    return tensors


def save_program(module: ExportModule, spec: ExportSpec, directory: Path) -> dict[str, Any]:
    """Write model.bf16.json and model.bf16.safetensors into ``directory``; returns what was written."""
    program = export_program(module, spec)
    serialized = serde.serialize(program)
    doc = {
        "format": PROGRAM_FORMAT,
        "torch": torch.__version__,
        "memory_format": "channels_last",
        "compile": "inductor",  # the runtime compiles it at load (serve.backends.COMPILE_BUCKETS)
        "parameters": list(program.graph_signature.parameters),
        "outputs": list(spec.output_names),
        "program": json.loads(serialized.exported_program),
    }
    program_path, weights_path = program_files(directory)
    text, weights = json.dumps(doc).encode(), save_tensors(_tensors(program))
    atomic_write(program_path, lambda tmp: tmp.write_bytes(text))
    atomic_write(weights_path, lambda tmp: tmp.write_bytes(weights))
    probe = getattr(module.guarded.generator, "probe", {})  # export.mixed.fastest_bf16: which layers left fp32
    return {
        "exporter": "torch.export",
        "torch": torch.__version__,
        "memory_format": "channels_last",
        "compile": {"backend": "inductor", "options": COMPILE_OPTIONS, "buckets": list(COMPILE_BUCKETS)},
        **probe,
    }


ROUTING_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
NEVER = 2**31 - 1  # fp32_below when the program is never the faster one


Call = Callable[[np.ndarray], object]  # z -> the artifact's outputs


def _median_ms(run: Call, z: np.ndarray, reps: int) -> float:
    """Median over ``reps`` calls, after warm-up calls and a pause that lets the other backend's threads idle.

    ONNX Runtime's and OpenMP's worker threads spin for a while after a run: timed in alternation, each
    backend ran on cores the other's spinners held (faces-dcgan batch 64: 8.9 ms for the program, 4.7 alone).
    """
    time.sleep(0.05)
    for _ in range(3):
        run(z)  # oneDNN primitives and ORT's arenas for this shape
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run(z)
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def crossover(program: Call, fp32: Call, z_dim: int, reps: int = 9) -> dict[str, Any]:
    """The smallest batch from which the program is faster than the fp32 graph at every larger batch timed.

    ``NEVER`` when the program loses at the largest batch timed (the runtime then always runs fp32)."""
    z = np.random.default_rng(0).standard_normal((ROUTING_BATCHES[-1], z_dim), dtype=np.float32)
    times = {b: (_median_ms(program, z[:b], reps), _median_ms(fp32, z[:b], reps)) for b in ROUTING_BATCHES}
    below = NEVER
    for batch in reversed(ROUTING_BATCHES):
        if times[batch][0] >= times[batch][1]:
            break
        below = batch
    ms = {str(b): {"bf16": round(t[0], 4), "fp32": round(t[1], 4)} for b, t in times.items()}
    return {"fp32_below": below, "timed_ms": ms}
