"""Peak memory of one backend at one batch, measured in a fresh process.

    python -m benchmarks.memory --backend onnxruntime-cpu --run RUN_DIR --onnx MODEL.onnx --batch 256

Method: resident set size (``/proc/self/statm``) sampled every 0.5 ms by a thread while the
backend runs ``--calls`` batches, after loading and one warm-up call (compilation included
there). Prints JSON: ``steady_mb`` (RSS after load and warm-up), ``peak_mb`` (sampled peak
during the calls), ``working_mb`` (their difference: what a call needs on top) and
``hwm_mb`` (the kernel's RSS high-water mark, VmHWM, of the whole process: load and compile
included). Not ``resource.getrusage``'s ru_maxrss: on Linux it keeps the parent's high-water
mark across fork + exec, so a child started by a large process reports the parent's size.
A fresh process keeps other backends' allocations out (the ONNX Runtime process imports no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


def hwm_mb() -> float:
    """VmHWM: this process's peak resident set size (reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


class PeakSampler:
    def __init__(self, interval_s: float = 5e-4) -> None:
        self.interval_s, self.peak, self._stop = interval_s, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def _backend(args: argparse.Namespace) -> Callable[[], object]:
    import numpy as np

    z = np.random.default_rng(0).standard_normal((args.batch, args.z_dim), dtype=np.float32)
    if args.backend == "onnxruntime-cpu":  # no torch in this process
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"z": z})
    import torch

    from feature_unlearn.export.module import build_module
    from feature_unlearn.export.source import load_source

    torch.set_num_threads(args.threads)
    src = load_source(str(args.run))
    module = build_module(src.generator, src.guard, "shift")
    fn = torch.compile(module) if args.backend == "torch-compile" else module
    zt = torch.from_numpy(z)

    def run() -> object:
        with torch.inference_mode():
            return fn(zt)

    return run


def measure(args: argparse.Namespace) -> dict[str, Any]:
    fn = _backend(args)
    fn()
    steady = rss_mb()
    with PeakSampler() as s:
        for _ in range(args.calls):
            fn()
    return {"backend": args.backend, "batch": args.batch, "steady_mb": round(steady, 1), "peak_mb": round(s.peak, 1),
            "working_mb": round(s.peak - steady, 1), "hwm_mb": round(hwm_mb(), 1)}  # fmt: skip


def run_isolated(
    backend: str, run: Path, onnx: Path, batch: int, z_dim: int, threads: int, calls: int = 5
) -> dict[str, Any]:
    """``measure`` in a fresh interpreter; raises RuntimeError with its stderr when it fails."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--backend", backend, "--run", str(run), "--onnx", str(onnx),
           "--batch", str(batch), "--z-dim", str(z_dim), "--threads", str(threads), "--calls", str(calls)]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {backend} failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["torch-eager", "torch-compile", "onnxruntime-cpu"], required=True)
    ap.add_argument("--run", type=Path, required=True, help="checkpoint directory (torch backends)")
    ap.add_argument("--onnx", type=Path, required=True, help="guarded model.onnx (onnxruntime-cpu)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--z-dim", type=int, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--calls", type=int, default=5)
    print(json.dumps(measure(ap.parse_args())))


if __name__ == "__main__":
    main()
