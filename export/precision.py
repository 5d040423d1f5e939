"""The export precisions, the backend each runs on, and what this machine supports.

Chosen by measurement on the zoo (``unlearn-cli bench``, the precision rows):

| precision | backend | what runs reduced |
|---|---|---|
| fp32 | ONNX Runtime | nothing |
| fp16 | ONNX Runtime (GPU providers; no speed on CPU) | the generator |
| bf16 | PyTorch (``torch.export`` program, channels_last) | the generator |
| int8 | ONNX Runtime (QDQ, after ``export.phase``) | the generator's Conv/MatMul |

ONNX Runtime has no bf16 convolution on CPU, and no int8 ConvTranspose (hence the phase rewrite).
In every precision the guard runs in fp32 on the fp32 input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feature_unlearn.unlearn.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BACKENDS = {"fp32": "onnxruntime", "fp16": "onnxruntime", "bf16": "torch", "int8": "onnxruntime"}
REDUCED = ("bf16", "int8")  # quality-gated at export (export.gates)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def fastest_cpu_precision(flags: set[str]) -> str:
    """What to suggest when bf16 is refused: int8 where the CPU has u8·s8 dot products, else fp32."""
    return "int8" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "fp32"


def resolve_precision(precision: str, fp16: bool, cuda: bool, flags: set[str] | None = None) -> str:
    """The one precision this export runs at; refuses unknown names and what this machine cannot run."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if fp16 and precision not in ("fp32", "fp16"):
        raise ConfigError(f"--fp16 with --precision {precision}: give one precision")
    precision = "fp16" if fp16 else precision
    flags = cpu_flags() if flags is None else flags
    if precision == "bf16" and not cuda and not flags & {"avx512_bf16", "amx_bf16"}:
        raise ConfigError(
            "--precision bf16: this CPU has no bf16 arithmetic (avx512_bf16 or amx_bf16) and no CUDA device is "
            f"present; the fastest precision here is {fastest_cpu_precision(flags)}"
        )
    return precision


def calibration_latents(spec: str, z_dim: int, seed: int) -> np.ndarray:
    """--calibration: N prior latents z ~ N(0, I), or a .npy file of float32 latents [N, z_dim]."""
    if spec.strip().isdigit():
        n = int(spec)
        if n <= 0:
            raise ConfigError("--calibration 0: int8 needs calibration latents (a count > 0 or a .npy file)")
        return np.random.default_rng(seed).standard_normal((n, z_dim), dtype=np.float32)
    path = Path(spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ConfigError(f"--calibration {spec!r}: not a count and not an existing .npy file")
    try:
        z = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--calibration {path}: unreadable .npy ({str(exc)[:120]})") from None
    if z.ndim != 2 or z.shape[1] != z_dim or len(z) == 0 or not np.isfinite(z).all():
        raise ConfigError(
            f"--calibration {path}: expected finite latents [N > 0, {z_dim}], got {z.dtype}{list(z.shape)}"
        )
    return z.astype(np.float32)
