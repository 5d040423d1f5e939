"""The bf16 generator: convolutions in bf16 on oneDNN, channels_last, and the cheap layers in fp32.

Transposed convs stay transposed convs (oneDNN's bf16 kernels run the wide ones at the bf16 roof), except
narrow output layers, which become one pixel-shuffled conv (``ShuffleConvTranspose``); BatchNorms are
folded and a 1x1 first layer is a matmul (``export.phase``). Which layers leave fp32 is measured per
generator (``fastest_bf16``): the vector layers too where the images stay within ``PIXEL_BUDGET``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from feature_unlearn.export.phase import (
    MatMulConvTranspose,
    PhaseConvTranspose,
    ShuffleConvTranspose,
    rewrite_transposed_convs,
)
from feature_unlearn.unlearn.images import to_uint8
from feature_unlearn.unlearn.models import z_dim_of

# Where the multiplies are: always bf16.
CONVS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, ShuffleConvTranspose, PhaseConvTranspose)
# Layers that read z or a vector: cheap ([N, z_dim] rows), but rounding z and their weights to bf16 was the
# largest error on mnist-dcgan (worst pixel 4.6 -> 9.6 grey levels on 2,000 latents); on faces-dcgan it
# stayed within 4 and saved 5% (batch 64). Everything else with parameters (norms, a flow prior) stays fp32.
VECTOR_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, MatMulConvTranspose)
PIXEL_BUDGET = (4, 0.5)  # worst and mean grey levels from fp32 that bf16 may cost (issue 15's target)
PROBE_LATENTS, PROBE_BATCH, PROBE_SEED = 1024, 128, 11


class Cast(nn.Module):
    """``layer`` run in ``dtype``: its input is cast on the way in, and its output stays in that dtype."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype))


def mixed_bf16(generator: nn.Module, bf16_layers: tuple[type[nn.Module], ...] = CONVS) -> int:
    """Wrap, in place, every module with parameters of its own in a ``Cast``: bf16 for ``bf16_layers``, else fp32."""
    wrapped = 0
    for name, module in reversed(list(generator.named_modules())):  # children before their parents
        own = list(module.parameters(recurse=False))
        if not name or not own:
            continue
        dtype = torch.bfloat16 if isinstance(module, bf16_layers) else torch.float32
        for param in own:
            param.data = param.data.to(dtype)
        parent, _, leaf = name.rpartition(".")
        setattr(generator.get_submodule(parent) if parent else generator, leaf, Cast(module, dtype))
        wrapped += 1
    return wrapped


class BFloat16Generator(nn.Module):
    """The generator with ``bf16_layers`` in bf16, channels_last, behind an fp32 interface: z arrives in fp32.

    channels_last lets the convs run without reordering every activation (1.35x over contiguous bf16 on
    faces-dcgan, batch 64). ``probe``: how it was chosen (``fastest_bf16``).
    """

    def __init__(self, generator: nn.Module, bf16_layers: tuple[type[nn.Module], ...] = CONVS) -> None:
        super().__init__()
        z = torch.randn(2, z_dim_of(generator), generator=torch.Generator().manual_seed(0))
        g, _ = rewrite_transposed_convs(generator, z, wide=None, narrow="shuffle")
        mixed_bf16(g, bf16_layers)
        self.generator = g.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.z_dim = z_dim_of(generator)
        self.probe: dict[str, Any] = {}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z).to(torch.float32)


@torch.no_grad()
def pixel_error(generator: nn.Module, reduced: nn.Module) -> tuple[int, float]:
    """Worst and mean grey-level difference of the uint8 images on ``PROBE_LATENTS`` prior latents."""
    z = torch.randn(PROBE_LATENTS, z_dim_of(generator), generator=torch.Generator().manual_seed(PROBE_SEED))
    worst, total = 0, 0.0
    for chunk in z.split(PROBE_BATCH):
        d = (to_uint8(reduced(chunk)).int() - to_uint8(generator(chunk)).int()).abs()
        worst, total = max(worst, int(d.max())), total + float(d.float().mean()) * len(chunk)
    return worst, total / len(z)


def fastest_bf16(generator: nn.Module) -> BFloat16Generator:
    """Vector layers in bf16 too when the images stay within ``PIXEL_BUDGET`` of fp32; else only the convs."""
    generator = generator.eval()
    fast = BFloat16Generator(generator, CONVS + VECTOR_LAYERS)
    worst, mean = pixel_error(generator, fast)
    chosen = fast
    if worst > PIXEL_BUDGET[0] or mean > PIXEL_BUDGET[1]:
        chosen = BFloat16Generator(generator, CONVS)
    chosen.probe = {
        "vector_layers": "bf16" if chosen is fast else "fp32",
        "all_bf16_error": {"max": worst, "mean": round(mean, 4), "latents": PROBE_LATENTS},
        "budget": {"max": PIXEL_BUDGET[0], "mean": PIXEL_BUDGET[1]},
    }
    return chosen
