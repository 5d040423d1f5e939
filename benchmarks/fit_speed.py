"""Fit steps/s for eager fp32, bf16 autocast, torch.compile and compile + bf16, side by side.

    python benchmarks/fit_speed.py --model faces-dcgan --steps 40 --json benchmarks/fit_speed.json

Each configuration runs the real training step (unlearn.fit.loop.Trainer) on the same latents,
after warm-up steps (compilation happens there and is reported separately). Ratios against eager
fp32 in the same run are what to read: absolute numbers on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from feature_unlearn.unlearn.device import maybe_compile, resolve_runtime
from feature_unlearn.unlearn.fit.distributed import Dist
from feature_unlearn.unlearn.fit.loop import Trainer
from feature_unlearn.unlearn.fit.loss import UnlearnLoss
from feature_unlearn.unlearn.fit.sampler import LatentPool
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.models import z_dim_of
from feature_unlearn.unlearn.zoo import load_generator

CONFIGS = [("eager", "fp32", False), ("eager", "bf16", False), ("compile", "fp32", True), ("compile", "bf16", True)]


def measure(
    model: str, precision: str, compiled: bool, steps: int, warmup: int, batch: int, device: str = "cpu"
) -> dict[str, float]:
    """Steps/s of the real training step after ``warmup`` steps (compilation happens there)."""
    torch.manual_seed(0)
    rt = resolve_runtime(device, precision)
    f = load_generator(model).requires_grad_(False).to(rt.device)
    g = copy.deepcopy(f).requires_grad_(True).eval()
    guard = LatentGuard(torch.eye(z_dim_of(f))[0], 1.0).to(rt.device)
    pool = LatentPool(guard, 8192, seed=0, round_index=0)  # latents stay on the CPU, moved per batch
    trainer = Trainer(f, g, maybe_compile(g, compiled), guard, UnlearnLoss(1.0), torch.optim.Adam(g.parameters(), 1e-4), rt.grad_scaler(), rt, Dist())
    t0 = time.perf_counter()
    for s in range(warmup):
        trainer.step(pool, s, batch, 0.5)
    _sync(rt.device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        trainer.step(pool, s, batch, 0.5)
    _sync(rt.device)
    dt = time.perf_counter() - t0
    return {"steps_per_s": steps / dt, "warmup_s": warm}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="faces-dcgan")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for mode, precision, compiled in CONFIGS:
        r = measure(args.model, precision, compiled, args.steps, args.warmup, args.batch)
        rows.append({"mode": mode, "precision": precision, **r})
        print(f"{mode:8} {precision}: {r['steps_per_s']:.2f} steps/s (warm-up {r['warmup_s']:.1f} s)", flush=True)
    base = rows[0]["steps_per_s"]
    for r in rows:
        r["speedup_vs_eager_fp32"] = r["steps_per_s"] / base
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "batch": args.batch, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
