"""Exact rewrites of a generator's transposed convolutions into ops that have int8 kernels (and fast bf16 ones).

ONNX Runtime quantizes Conv and MatMul on CPU but has no int8 ConvTranspose, so a static
quantization leaves a DCGAN's or VAE decoder's main layers in fp32. Two exact rewrites fix that:

- a stride-s ConvTranspose2d splits into s² *phase* convolutions (output pixel (s·m + r, s·n + q)
  only ever sees kernel taps ≡ r + p, q + p mod s), each a plain Conv2d with k/s taps per axis on
  the input, interleaved back by stacking along the last axes (reshapes and concats, no
  transpose). Same multiplies as the transposed convolution: none are wasted, unlike a 3×3 conv
  with 4× the channels (9/4 of the work);
- a ConvTranspose2d applied to a 1×1 input (the first layer of a DCGAN) is a matrix product.

BatchNorm2d right after a convolution in an ``nn.Sequential`` is folded into it first (eval-mode
statistics), so the rewritten layer carries the affine transform and nothing runs in between.
Anything else is left as it is: the rewrite never changes what the generator computes.
"""

from __future__ import annotations

import copy
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

Conv = Union[nn.Conv2d, nn.ConvTranspose2d]


def fold_batchnorm(conv: Conv, bn: nn.BatchNorm2d) -> Conv:
    """A copy of ``conv`` whose weights and bias include the eval-mode ``bn`` that follows it."""
    assert bn.running_mean is not None and bn.running_var is not None, "BatchNorm2d without running statistics"
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    out = copy.deepcopy(conv)
    axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0  # the output-channel axis of the weight
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    out.weight = nn.Parameter(conv.weight.detach() * scale.detach().reshape(shape))
    out.bias = nn.Parameter((bias - bn.running_mean) * scale.detach() + shift.detach())
    return out


def fold_all_batchnorms(module: nn.Module) -> int:
    """Fold every (Conv2d | ConvTranspose2d, BatchNorm2d) pair inside ``nn.Sequential`` blocks; returns how many."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            groups = getattr(conv, "groups", 0)
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d) and groups == 1:
                if bn.track_running_stats and bn.running_mean is not None:
                    seq._modules[a] = fold_batchnorm(conv, bn)
                    seq._modules[b] = nn.Identity()
                    folded += 1
    return folded


class MatMulConvTranspose(nn.Module):
    """ConvTranspose2d on a 1×1 input, padding 0 (+ its activation): x [N, Cin, 1, 1] -> act(x·W) [N, Cout, kh, kw]."""

    def __init__(self, conv: nn.ConvTranspose2d, act: nn.Module) -> None:
        super().__init__()
        cin, cout, kh, kw = conv.weight.shape
        self.shape = (cout, kh, kw)
        self.weight = nn.Parameter(conv.weight.detach().reshape(cin, cout * kh * kw).t().contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(cout)
        self.bias = nn.Parameter(bias.repeat_interleave(kh * kw).clone())
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == (1, 1), f"expected a 1x1 input, got {tuple(x.shape)}"
        y = self.act(F.linear(x.flatten(1), self.weight, self.bias))  # Gemm: quantized with its bias
        return y.reshape(x.shape[0], *self.shape)


def _ksp(conv: nn.ConvTranspose2d) -> tuple[int, int, int]:
    """Kernel size, stride and padding along the first axis (``decomposable`` checks both axes agree)."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    assert isinstance(p, int), "string paddings do not occur on ConvTranspose2d"
    return k, s, p


def _phase_taps(k: int, s: int, p: int, r: int) -> tuple[list[int], int]:
    """Kernel indices (in correlation order) and the left pad of output phase r of a stride-s transposed conv."""
    taps = k // s
    q, base = (r + p) % s, (r + p) // s
    return [s * (taps - 1 - j) + q for j in range(taps)], taps - 1 - base


class PhaseConvTranspose(nn.Module):
    """ConvTranspose2d(k, stride s, padding p) with k % s == 0 as s² Conv2d phases, interleaved by reshapes."""

    def __init__(self, conv: nn.ConvTranspose2d, in_hw: tuple[int, int], act: nn.Module) -> None:
        super().__init__()
        k, s, p = _ksp(conv)
        self.act = act  # applied per phase: the interleave only permutes pixels, and a quantized conv then
        # covers the activation's range ([0, max] after ReLU, [-1, 1] after tanh), not the pre-activation's
        w = conv.weight.detach()  # [Cin, Cout, k, k]
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[1])
        self.s, self.pads = s, []
        weights = []
        for r in range(s):
            rows, top = _phase_taps(k, s, p, r)
            for q in range(s):
                cols, left = _phase_taps(k, s, p, q)
                weights.append(w[:, :, rows][:, :, :, cols].permute(1, 0, 2, 3).contiguous())
                bottom, right = (_right_pad(in_hw[i], top if i == 0 else left, k, s, p) for i in (0, 1))
                self.pads.append((left, right, top, bottom))
        # one initializer per phase (a slice of a stacked weight would be computed at run time, and a
        # quantizer only quantizes constant weights): [Cout, Cin, k/s, k/s] each
        self.weights = nn.ParameterList([nn.Parameter(w_r) for w_r in weights])
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.s
        phases = [self.act(F.conv2d(F.pad(x, p), w, self.bias)) for p, w in zip(self.pads, self.weights, strict=True)]
        n, c, h, w = phases[0].shape
        # (row phase r, column phase q) -> pixel (s·m + r, s·n + q): interleave columns, then rows
        rows = [torch.stack(phases[r * s : (r + 1) * s], -1).reshape(n, c, h, s * w) for r in range(s)]
        return torch.stack(rows, 3).reshape(n, c, s * h, s * w)


class ShuffleConvTranspose(nn.Module):
    """The s² phases as one Conv2d with s²·Cout channels on a common window, then pixel_shuffle.

    Taps a phase does not use are zero: (k/s + 1)² / (k/s)² the multiplies of the transposed conv (9/4 for
    k 4, s 2), which pays for itself on a narrow output layer only. oneDNN's bf16 transposed conv with 3
    output channels (faces-dcgan's RGB layer) ran at a sixth of the rate of the wide layers: 0.95 ms of
    3.6 ms at batch 64, against 0.47 ms as this conv (mnist-dcgan's grey layer: 0.80 -> 0.35 ms).
    """

    def __init__(self, conv: nn.ConvTranspose2d, in_hw: tuple[int, int], act: nn.Module) -> None:
        super().__init__()
        phase = PhaseConvTranspose(conv, in_hw, nn.Identity())
        s, taps = phase.s, phase.weights[0].shape[-1]
        lefts, tops = [p[0] for p in phase.pads[:s]], [phase.pads[r * s][2] for r in range(s)]
        left, top = max(lefts), max(tops)  # square layers (``decomposable``): both axes have the same spread
        k = taps + left - min(lefts)
        cout, cin = phase.weights[0].shape[:2]
        w = torch.zeros(cout, s, s, cin, k, k)  # output channel c·s² + r·s + q is phase (r, q): pixel_shuffle's order
        for i, w_r in enumerate(phase.weights):
            dy, dx = top - phase.pads[i][2], left - phase.pads[i][0]
            w[:, i // s, i % s, :, dy : dy + taps, dx : dx + taps] = w_r.detach()
        self.weight = nn.Parameter(w.reshape(cout * s * s, cin, k, k))
        self.bias = nn.Parameter(phase.bias.detach().repeat_interleave(s * s).clone())
        # the window starts (left - phase 0's left pad) earlier and is (k - taps) wider than phase 0's
        right = phase.pads[0][1] + (k - taps) - (left - phase.pads[0][0])
        bottom = phase.pads[0][3] + (k - taps) - (top - phase.pads[0][2])
        self.s, self.act, self.pad = s, act, (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pad
        if (left, top) == (right, bottom):  # the conv pads inside its kernel: no padded copy of x
            y = F.conv2d(x, self.weight, self.bias, padding=(top, left))
        else:
            y = F.conv2d(F.pad(x, self.pad), self.weight, self.bias)
        # the activation is elementwise, so it commutes with the pixel shuffle's permutation
        return F.pixel_shuffle(self.act(y), self.s)


def _right_pad(size: int, left: int, k: int, s: int, p: int) -> int:
    """Pad after the input so each phase yields out/s outputs (out = (size − 1)·s − 2p + k)."""
    out = (size - 1) * s - 2 * p + k
    return out // s - size - left + k // s - 1


def decomposable(conv: nn.ConvTranspose2d, in_hw: tuple[int, int]) -> Optional[str]:
    """Which rewrite fits this layer at this input size: 'matmul', 'phase' or None (left as is)."""
    square = conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
    plain = conv.groups == 1 and conv.dilation == (1, 1) and conv.output_padding == (0, 0) and square
    plain = plain and conv.padding[0] == conv.padding[1] and conv.padding_mode == "zeros"
    if not plain:
        return None
    if in_hw == (1, 1) and conv.padding == (0, 0):
        return "matmul"
    k, s, p = _ksp(conv)
    if s < 2 or k % s:
        return None
    out = [(n - 1) * s - 2 * p + k for n in in_hw]
    if any(o % s for o in out):
        return None
    pads = [(_phase_taps(k, s, p, r)[1], n) for r in range(s) for n in in_hw]
    return "phase" if all(left >= 0 and _right_pad(n, left, k, s, p) >= 0 for left, n in pads) else None


def input_sizes(generator: nn.Module, z: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Spatial input size of every ConvTranspose2d, recorded on one forward pass."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, name=name: sizes.__setitem__(name, tuple(a[0].shape[2:])))
        for name, m in generator.named_modules()
        if isinstance(m, nn.ConvTranspose2d)
    ]
    try:
        with torch.no_grad():
            generator(z)
    finally:
        for h in hooks:
            h.remove()
    return sizes


ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.GELU, nn.Hardtanh)


def _activation_after(holder: nn.Module, leaf: str) -> tuple[nn.Module, str | None]:
    """The elementwise activation that follows ``leaf`` in a Sequential (Identities skipped), and its name."""
    if not isinstance(holder, nn.Sequential):
        return nn.Identity(), None
    names = list(holder._modules)
    for name in names[names.index(leaf) + 1 :]:
        module = holder._modules[name]
        if isinstance(module, nn.Identity):
            continue
        return (module, name) if isinstance(module, ELEMENTWISE) else (nn.Identity(), None)
    return nn.Identity(), None


# An int8 conv with few output channels leaves the u8·s8 GEMM kernels idle: the RGB or grey output layer of
# faces-dcgan (3) and mnist-dcgan (1) ran 1.8x and 4.8x slower as four int8 phase convs than as one fp32
# ConvTranspose (measured, ONNX Runtime 1.32, batch 64). Such layers stay transposed convs, hence fp32.
MIN_INT8_CHANNELS = 16


REWRITES = {"phase": PhaseConvTranspose, "shuffle": ShuffleConvTranspose}


def rewrite_transposed_convs(
    generator: nn.Module,
    z: torch.Tensor,
    min_channels: int = MIN_INT8_CHANNELS,
    wide: Optional[str] = "phase",
    narrow: Optional[str] = None,
) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``generator`` with BatchNorms folded and transposed convs rewritten; and what changed.

    A strided layer with at least ``min_channels`` output channels becomes ``wide``, a narrower one
    ``narrow``: "phase" (int8), "shuffle" (bf16's output layer) or None (left a transposed conv). A
    ConvTranspose on a 1×1 input always becomes a matrix product.
    """
    g = copy.deepcopy(generator).eval()
    counts = {"batchnorm_folded": fold_all_batchnorms(g), "activations_moved": 0}
    counts |= {"matmul": 0, "phase": 0, "shuffle": 0, "kept": 0}
    for name, hw in input_sizes(g, z).items():
        parent, _, leaf = name.rpartition(".")
        holder = g.get_submodule(parent) if parent else g
        conv = holder.get_submodule(leaf)
        assert isinstance(conv, nn.ConvTranspose2d)
        kind = decomposable(conv, hw)
        if kind == "phase":
            kind = wide if conv.out_channels >= min_channels else narrow
        counts[kind or "kept"] += 1
        if kind is None:
            continue
        act, act_name = _activation_after(holder, leaf)
        layer = MatMulConvTranspose(conv, act) if kind == "matmul" else REWRITES[kind](conv, hw, act)
        setattr(holder, leaf, layer)
        if act_name is not None:
            setattr(holder, act_name, nn.Identity())
            counts["activations_moved"] += 1
    return g, counts
