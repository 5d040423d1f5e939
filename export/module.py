"""The module that becomes the graph: guard -> generator -> uint8 NHWC image.

The guard math lives in ``unlearn.guard`` only; this file wires it in front of the generator,
optionally puts the generator (never the guard) in a reduced precision, and converts the image
to uint8 with ``unlearn.images.to_uint8`` so the conversion runs inside the graph.
"""

from __future__ import annotations

import copy
from typing import Optional, cast

import numpy as np
import torch
from torch import nn

from feature_unlearn.export.mixed import fastest_bf16
from feature_unlearn.export.phase import rewrite_transposed_convs
from feature_unlearn.unlearn.artifacts import GuardRecord
from feature_unlearn.unlearn.guard import GuardedGenerator, LatentGuard, guard_from_record
from feature_unlearn.unlearn.imagecheck import ImageCheck
from feature_unlearn.unlearn.images import to_uint8


def z_dim_of(generator: nn.Module) -> int:
    z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int):
        raise TypeError(f"{type(generator).__name__} has no integer z_dim")
    return z_dim


class HalfGenerator(nn.Module):
    """The generator in fp16 behind an fp32 interface: z_out is cast to fp16 *after* the guard."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = copy.deepcopy(generator).half().eval()
        self.z_dim = z_dim_of(generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z.to(torch.float16)).to(torch.float32)


def reduced_generator(generator: nn.Module, precision: str) -> nn.Module:
    """The generator as it runs at ``precision`` (int8: exact Conv/MatMul rewrite, quantized after export)."""
    if precision == "fp16":
        return HalfGenerator(generator)
    if precision == "bf16":
        return fastest_bf16(generator)
    if precision == "int8":
        z = torch.randn(2, z_dim_of(generator), generator=torch.Generator().manual_seed(0))
        rewritten, _ = rewrite_transposed_convs(generator, z)
        rewritten.z_dim = z_dim_of(generator)  # type: ignore[assignment]
        return rewritten
    assert precision == "fp32", precision
    return generator


class ExportModule(nn.Module):
    """z float32 [N, z_dim] -> (image uint8 [N, H, W, C], flagged bool [N], score float32 [N]).

    With an image check, two more outputs: image_flagged bool [N] and image_score float32 [N], the
    check run in fp32 on the float image (the same pixels the uint8 output rounds).
    """

    def __init__(self, guarded: GuardedGenerator, has_direction: bool, check: Optional[ImageCheck] = None) -> None:
        super().__init__()
        self.guarded = guarded
        self.has_direction = has_direction  # static: no target vector means score is all zeros
        self.z_dim = guarded.z_dim
        self.check = check

    @property
    def guard(self) -> LatentGuard:
        guard = self.guarded.guard
        assert isinstance(guard, LatentGuard)
        return guard

    def guard_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The graph's unit directions [K, z_dim] and thresholds [K], as float32 arrays."""
        u, t = cast(torch.Tensor, self.guard.u), cast(torch.Tensor, self.guard.t)
        return u.detach().numpy().copy(), t.detach().numpy().copy()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image, flagged, score = self.guarded(z)
        if not self.has_direction:
            score = torch.zeros_like(score)
        if self.check is None:
            return to_uint8(image), flagged, score
        image_flagged, image_score = self.check(image.float())
        return to_uint8(image), flagged, score, image_flagged, image_score


def make_guard(vector: Optional[GuardRecord], z_dim: int, mode: str) -> LatentGuard:
    """The guard for the graph; without a target vector only mode 'off' exists (a placeholder axis)."""
    if vector is None:
        assert mode == "off", "a guard without a target vector can only be off"
        return LatentGuard(torch.eye(z_dim)[:1], torch.tensor([float("inf")]), "off")
    return guard_from_record(vector, mode)


def build_module(
    generator: nn.Module,
    vector: Optional[GuardRecord],
    mode: str,
    fp16: bool = False,
    check: Optional[ImageCheck] = None,
    precision: str = "fp32",
) -> ExportModule:
    """The eval-mode module to export (``precision``/``fp16`` reduce the generator only, never guard or check)."""
    guard = make_guard(vector, z_dim_of(generator), mode)
    gen = reduced_generator(generator, "fp16" if fp16 else precision)
    return ExportModule(GuardedGenerator(gen.eval(), guard).eval(), vector is not None, check).eval()
