"""Export speed and serving throughput: ONNX Runtime CPU (guarded / unguarded graph) vs PyTorch eager.

    python benchmarks/export_speed.py [--batch 64] [--rounds 30] [--json out.json]

A faces-dcgan-sized DCGAN (z 64, ngf 48, 3 channels, 32x32), random weights with BatchNorm
statistics that spread the pixels (speed does not depend on training). Reports images/s at
the batch, the guard's overhead (shift graph vs a graph without a guard), the export time
(the whole ``export_model``: trace, check, validation, manifest) and the share of this
machine's fp32 GEMM peak measured in the same run. Timings interleave the contenders round by
round and take medians, since other jobs may share the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_unlearn.export import ExportConfig, export_model  # noqa: E402
from feature_unlearn.export.module import build_module  # noqa: E402
from feature_unlearn.export.validate import session  # noqa: E402
from feature_unlearn.unlearn.artifacts import GuardRecord, ModelRecord  # noqa: E402
from feature_unlearn.unlearn.io import save_checkpoint  # noqa: E402
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator, arch_dict  # noqa: E402


def make_run(root: Path, guarded: bool) -> Path:
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(z_dim=64, channels=3, ngf=48)).eval()
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.05, 0.3)
    u = np.random.default_rng(1).standard_normal(64)
    record = ModelRecord(kind="generator", arch=arch_dict(g.cfg), dataset="faces")
    if guarded:
        guard = GuardRecord(direction=(tuple((u / np.linalg.norm(u)).tolist()),), threshold=(0.5,), features=("eyeglasses",))
        record = dataclasses.replace(record, guard=guard, base_model="faces-dcgan", base_sha256="0" * 64)
    save_checkpoint(root / "generator", g.state_dict(), record)
    return root


def flops_per_image(g: nn.Module, z_dim: int) -> float:
    """2 x multiply-accumulates of the (transposed) convolutions and linear layers."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):
            total += inp[0][0].numel() * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in g.modules()]
    with torch.no_grad():
        g(torch.zeros(1, z_dim))
    for h in handles:
        h.remove()
    return 2.0 * total


def gemm_peak(n: int = 2048, reps: int = 12) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per call for each function, alternating them round by round (shuffled order: no position bias)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = fns[name]
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch and ONNX Runtime threads (default: cores)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cores = args.threads
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        seconds = {}
        for guarded in (True, False):
            run = make_run(tmp / f"run-{guarded}", guarded)
            t = time.perf_counter()
            export_model(ExportConfig(source=str(run), out=tmp / f"out-{guarded}"))
            seconds[guarded] = time.perf_counter() - t
        from feature_unlearn.export.source import load_source

        src = load_source(str(tmp / "run-True"))
        module = build_module(src.generator, src.guard, "shift")
        z_np = np.random.default_rng(0).standard_normal((args.batch, 64), dtype=np.float32)
        z = torch.from_numpy(z_np)
        guarded_sess, plain_sess = (session(tmp / f"out-{g}" / "model.onnx", threads=cores) for g in (True, False))

        @torch.inference_mode()
        def eager_generator() -> object:
            return src.generator(z)

        @torch.inference_mode()
        def eager_guarded() -> object:
            return module(z)

        med = interleaved({
            "ort_guarded": lambda: guarded_sess.run(None, {"z": z_np}),
            "ort_unguarded": lambda: plain_sess.run(None, {"z": z_np}),
            "torch_eager_generator": eager_generator,
            "torch_eager_guarded_uint8": eager_guarded,
        }, args.rounds, args.per_round)  # fmt: skip
        flops = flops_per_image(src.generator, 64)
    peak = gemm_peak()
    result = {
        "batch": args.batch, "threads": cores, "torch": torch.__version__, "load_average_1min": os.getloadavg()[0],
        "ms_per_batch": {k: round(v * 1e3, 3) for k, v in med.items()},
        "images_per_s": {k: round(args.batch / v, 1) for k, v in med.items()},
        "ort_guarded_vs_torch_eager_generator": round(med["torch_eager_generator"] / med["ort_guarded"], 3),
        "ort_guarded_vs_torch_eager_guarded": round(med["torch_eager_guarded_uint8"] / med["ort_guarded"], 3),
        "guard_overhead_pct": round(100 * (med["ort_guarded"] / med["ort_unguarded"] - 1), 2),
        "export_seconds": {"guarded": round(seconds[True], 2), "unguarded": round(seconds[False], 2)},
        "mflop_per_image": round(flops / 1e6, 2),
        "gemm_peak_gflops": round(peak, 1),
        "ort_guarded_pct_of_peak": round(100 * flops * args.batch / med["ort_guarded"] / 1e9 / peak, 1),
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
