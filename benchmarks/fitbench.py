"""Fit speed: steps/s per precision and compilation mode (``fit_speed.measure``), and 2-process DDP.

DDP runs the real ``unlearn-cli fit`` under ``torchrun --standalone --nproc_per_node=2`` (gloo, one
thread per process, as torchrun sets) against a 1-process run of the same command and global batch;
both figures are the ``steps_per_second`` their run.json reports (training time, probes included).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import BenchConfig
from benchmarks.fit_speed import CONFIGS, measure
from benchmarks.models import shipped
from feature_unlearn.unlearn.io import read_run


def fit_model(cfg: BenchConfig) -> str:
    return cfg.fit_model or ("faces-dcgan" if shipped("faces-dcgan") else "mnist-dcgan")


def configs(cuda: bool) -> list[tuple[str, str, bool, str]]:
    """(mode, precision, compiled, device): the CPU set always; on a GPU its set with fp16 too."""
    rows = [(mode, precision, compiled, "cpu") for mode, precision, compiled in CONFIGS]
    if cuda:
        rows += [(mode, precision, compiled, "cuda") for mode, precision, compiled in CONFIGS]
        rows += [("eager", "fp16", False, "cuda"), ("compile", "fp16", True, "cuda")]
    return rows


def _fit_cmd(model: str, out: Path, steps: int, batch: int) -> list[str]:
    return ["feature_unlearn.cli", "fit", "--model", model, "--out", str(out), "--steps", str(steps), "--steps-per-round", str(steps),
            "--n-collect", "1000", "--batch", str(batch), "--device", "cpu", "--force"]  # fmt: skip


def _run_json(cmd: list[str], out: Path) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} … failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return read_run(out).metrics


def ddp(cfg: BenchConfig, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        single = _run_json(
            [sys.executable, "-m", *_fit_cmd(model, one, cfg.ddp_steps, cfg.fit_batch), "--threads", str(cfg.threads)],
            one,
        )
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
        double = _run_json([*torchrun, *_fit_cmd(model, two, cfg.ddp_steps, cfg.fit_batch)], two)
    return {"model": model, "steps": cfg.ddp_steps, "global_batch": cfg.fit_batch,
            "one_process": {"threads": cfg.threads, "steps_per_s": single["steps_per_second"], "seconds": single["seconds"]},
            "two_process_ddp": {"threads_each": 1, "steps_per_s": double["steps_per_second"], "seconds": double["seconds"]},
            "speedup": round(double["steps_per_second"] / single["steps_per_second"], 3)}  # fmt: skip


def run_fit_speed(cfg: BenchConfig) -> dict[str, Any]:
    model = fit_model(cfg)
    rows: list[dict[str, Any]] = []
    for mode, precision, compiled, device in configs(torch.cuda.is_available()):
        try:
            r = measure(model, precision, compiled, cfg.fit_steps, cfg.fit_warmup, cfg.fit_batch, device=device)
        except Exception as exc:  # noqa: BLE001 - a configuration that cannot run is a finding, not a crash
            rows.append(
                {"mode": mode, "precision": precision, "device": device, "error": f"{type(exc).__name__}: {exc}"[:400]}
            )
            continue
        rows.append({"mode": mode, "precision": precision, "device": device, "steps_per_s": round(r["steps_per_s"], 3),
                     "warmup_s": round(r["warmup_s"], 2)})  # fmt: skip
        print(f"fit {device} {mode} {precision}: {r['steps_per_s']:.2f} steps/s", flush=True)
    for r in rows:
        base = next(
            (b for b in rows if b["device"] == r["device"] and b["mode"] == "eager" and b["precision"] == "fp32"), None
        )
        if base and "steps_per_s" in base and "steps_per_s" in r:
            r["speedup_vs_eager_fp32"] = round(r["steps_per_s"] / base["steps_per_s"], 3)
    out: dict[str, Any] = {
        "model": model,
        "batch": cfg.fit_batch,
        "steps": cfg.fit_steps,
        "warmup": cfg.fit_warmup,
        "rows": rows,
    }
    if cfg.ddp:
        try:
            out["ddp"] = ddp(cfg, model)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            out["ddp"] = {"error": str(exc)[:800]}
    return out
