"""The engines an artifact runs on, chosen from its manifest: ONNX Runtime, or a PyTorch program.

fp32, fp16 and int8 artifacts are ONNX graphs (the runtime stays torch-free). A bf16 artifact adds a
``torch.export`` program (``model.bf16.json``: the graph as JSON, no Python code and no pickle) and
its weights (``model.bf16.safetensors``), because ONNX Runtime has no bf16 convolution on CPU. Only
that backend imports torch, lazily: without it the load fails with one line naming the fix.
Both files are authenticated by their sha256 in manifest.json before anything reads them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

PROGRAM, PROGRAM_WEIGHTS = "model.bf16.json", "model.bf16.safetensors"
PROGRAM_FORMAT = 1
CONSTANT = "constant::"  # prefix of lifted constants among the safetensors entries

Run = Callable[[Sequence[str], np.ndarray], list[np.ndarray]]  # (output names, z) -> outputs in that order


# PyTorch takes activations from malloc (ONNX Runtime has its own arena), and glibc hands every freed block
# over its adaptive mmap threshold back to the OS: each faces-dcgan batch-64 call of the bf16 program then
# re-faulted ~990 pages, 5.1 ms against 3.6 ms without. 32 MiB is the largest threshold glibc accepts.
MALLOC = {"M_MMAP_THRESHOLD": (-3, 32 << 20), "M_TRIM_THRESHOLD": (-1, 256 << 20)}


class BackendError(RuntimeError):
    """The backend cannot run this artifact here (missing package, unreadable program)."""


def _torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError:
        raise BackendError(
            "this artifact's precision (bf16) runs on PyTorch, which is not installed: pip install torch, "
            "or export it with --precision fp32 or int8 for the torch-free runtime"
        ) from None
    return torch


def _tensors(data: bytes, torch: Any) -> dict[str, Any]:
    try:
        from safetensors.torch import load
    except ModuleNotFoundError:
        raise BackendError("the bf16 backend needs safetensors: pip install safetensors") from None
    try:
        return dict(load(data))
    except Exception as exc:  # safetensors raises SafetensorError and others
        raise BackendError(f"{PROGRAM_WEIGHTS}: unreadable ({str(exc)[:120]})") from None


def _program_doc(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendError(f"{PROGRAM}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROGRAM_FORMAT or not isinstance(doc.get("program"), dict):
        raise BackendError(f"{PROGRAM}: not a program this runtime reads (format {PROGRAM_FORMAT})")
    return doc


def keep_freed_memory() -> bool:
    """Have glibc keep freed buffers for reuse (process-wide, like the thread count); False where not glibc."""
    if platform.system() != "Linux":
        return False
    try:
        mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)
    except OSError:
        return False
    return mallopt is not None and all([mallopt(option, value) == 1 for option, value in MALLOC.values()])


# Inductor with frozen weights: oneDNN's bf16 convolutions get their weights packed once and the ReLUs fused
# in, which needs static shapes, so the program is compiled once per batch bucket, and a batch between two
# buckets is padded up to the larger (rows are independent). faces-dcgan, batch 64, 2 threads: 4.0 ms
# eager, 3.0-3.2 ms compiled; without freezing 4.6 ms, and with a dynamic batch 5.0 ms (no packed weights).
COMPILE_BUCKETS = (16, 32, 64, 128)
COMPILE_OPTIONS = {"freezing": True}


def compile_buckets(smallest: int) -> tuple[int, ...]:
    """The buckets a program routed from batch ``smallest`` on needs (the largest one at least)."""
    return tuple(b for b in COMPILE_BUCKETS if b >= smallest) or COMPILE_BUCKETS[-1:]


def _compiled(module: Any, torch: Any, z_dim: int, buckets: Sequence[int]) -> Callable[[Any], tuple[Any, ...]]:
    """``module`` compiled by Inductor for every batch in ``buckets`` now, at load, so no request pays for it.

    A call runs chunks of the largest bucket, each padded up to the smallest bucket that holds it."""
    compiled = torch.compile(module, dynamic=False)
    try:  # compile now, under the options (torch.compile's options= does not switch freezing on)
        with torch._inductor.config.patch(**COMPILE_OPTIONS), torch.inference_mode():
            for b in buckets:
                compiled(torch.zeros(b, z_dim))
    except Exception as exc:  # Inductor raises many types: no C++ compiler, an op it cannot lower, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BackendError(
            f"{PROGRAM}: compiling it with Inductor failed ({first}); it needs a C++ compiler (g++): install "
            "one, or run the program uncompiled (SafeGenerator.load(compile_program=False), serve --eager-program)"
        ) from None

    def call(z: Any) -> tuple[Any, ...]:
        parts = []
        for chunk in z.split(buckets[-1]):
            n = len(chunk)
            b = min(x for x in buckets if x >= n)
            padded = torch.cat([chunk, chunk.new_zeros(b - n, z_dim)]) if b > n else chunk
            parts.append([out[:n] for out in compiled(padded)])
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))

    return call


def load_program(
    program: bytes,
    weights: bytes,
    z_dim: int,
    threads: Optional[int] = None,
    compile_from: Optional[int] = 1,
) -> Run:
    """A ``torch.export`` program rebuilt from its JSON and safetensors bytes (never from a pickle).

    ``compile_from``: a program exported for Inductor (``compile`` in its JSON) is compiled for the
    batch buckets from this batch on (``compile_buckets``); None runs it uncompiled."""
    torch = _torch()
    from torch._export.serde import serialize as serde

    doc = _program_doc(program)
    tensors = _tensors(weights, torch)
    channels_last = doc.get("memory_format") == "channels_last"
    params = set(doc.get("parameters", []))
    state, constants = {}, {}
    for name, t in tensors.items():
        if name.startswith(CONSTANT):
            constants[name[len(CONSTANT) :]] = t
            continue
        t = t.contiguous(memory_format=torch.channels_last) if channels_last and t.ndim == 4 else t
        state[name] = torch.nn.Parameter(t, requires_grad=False) if name in params else t
    example: tuple[tuple[Any, ...], dict[str, Any]] = ((torch.zeros(1, z_dim),), {})
    # the deserializer takes already-loaded tensors (dicts and tuples pass through untouched) in place of the
    # torch.save bytes it would otherwise unpickle: nothing here is ever unpickled
    program_bytes = json.dumps(doc["program"]).encode()
    artifact = serde.SerializedArtifact(program_bytes, state, constants, example)  # type: ignore[arg-type]
    try:
        module = serde.deserialize(artifact).module()
    except Exception as exc:  # the deserializer raises many types for a program it cannot rebuild
        raise BackendError(
            f"{PROGRAM}: PyTorch {torch.__version__} cannot rebuild the program ({str(exc)[:160]})"
        ) from None
    if threads:  # process-wide: the runtime owns its process (SafeGenerator.load(threads=...))
        torch.set_num_threads(threads)
    keep_freed_memory()
    names = list(doc.get("outputs", []))
    forward: Callable[[Any], Any] = module
    if doc.get("compile") == "inductor" and compile_from is not None:
        forward = _compiled(module, torch, z_dim, compile_buckets(compile_from))

    def run(outputs: Sequence[str], z: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            got = forward(torch.from_numpy(z))
        by_name = dict(zip(names, got, strict=True))
        return [by_name[o].numpy() for o in outputs]

    return run


def routed(program: Run, fp32: Run, fp32_below: int) -> Run:
    """A bf16 artifact's backend: batches under ``fp32_below`` on its fp32 graph, larger ones on its program.

    ``fp32_below`` is the crossover export measured (``export.bf16.crossover``): at small batches PyTorch's
    per-op overhead outweighs bf16's faster multiplies. The guard is fp32 in both, so decisions do not move.
    """

    def run(outputs: Sequence[str], z: np.ndarray) -> list[np.ndarray]:
        return (fp32 if len(z) < fp32_below else program)(outputs, z)

    return run


def onnx_runner(session: Any, input_name: str) -> Run:
    """ONNX Runtime: the outputs asked for, by name."""

    def run(outputs: Sequence[str], z: np.ndarray) -> list[np.ndarray]:
        return list(session.run(list(outputs), {input_name: z}))

    return run


def program_files(directory: Path) -> tuple[Path, Path]:
    return directory / PROGRAM, directory / PROGRAM_WEIGHTS
