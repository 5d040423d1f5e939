"""Device and precision, resolved once per run; unsupported combinations raise."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from feature_unlearn.unlearn.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def autocast(self) -> AbstractContextManager[None]:
        """The one autocast context of a run (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling; bf16 and fp32 get a disabled scaler (a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve_runtime(device: str = "auto", precision: str = "fp32", local_rank: int = 0) -> Runtime:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ConfigError(f"--device {device!r}: choose auto, cpu or cuda")
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return Runtime(dev, precision)


def maybe_compile(module: torch.nn.Module, enabled: bool) -> Callable[..., torch.Tensor]:
    """torch.compile'd forward when enabled; the original module stays the one we save."""
    return torch.compile(module) if enabled else module  # type: ignore[return-value]
