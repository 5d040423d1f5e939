"""``run_bench``: every benchmark section in one run on one machine, then JSON, RESULTS.md and plots.

    unlearn-cli bench [--quick] [--json PATH] [--out DIR] [--skip-fit] [--skip-unlearning] ...

Order: machine facts and the fp32 GEMM peak; inference (all backends, batches, guard overhead,
memory); fit speed (precisions, compile, DDP); the unlearning table; the HTTP load test
(benchmarks/serve_load.py); the GEMM peak again (the roofline uses the better of the two);
the targets as ratios. Outputs are written atomically (``unlearn.io``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import FOREIGN_LIMIT, BenchConfig
from benchmarks.export_speed import gemm_peak
from benchmarks.models import load_bench_model, shipped, write_run
from benchmarks.report import write_report
from benchmarks.targets import all_targets
from benchmarks.timing import idle_probe
from feature_unlearn.unlearn.io import write_json

MEMORY_METHOD = ("Resident set size sampled every 0.5 ms (/proc/self/statm) by a thread in a fresh process per backend while it runs "
                 "5 batches, after loading and one warm-up call; steady = RSS before the calls, working = peak − steady, high-water = "
                 "VmHWM of that process (load and compilation included; not getrusage's ru_maxrss, which on Linux carries the "
                 "parent's high-water mark across fork + exec). The ONNX Runtime process imports no torch.")  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(cfg: BenchConfig, command: str) -> dict[str, Any]:
    import onnxruntime as ort

    load = os.getloadavg()[0]
    return {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": cfg.threads, "torch": torch.__version__,
            "onnxruntime": ort.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "load_start": round(load, 2),
            "gemm_peak_start": round(gemm_peak(), 1)}  # fmt: skip


def annotate_roofline(res: dict[str, Any], peak: float) -> None:
    for r in res.get("inference", []):
        r["roofline_fraction"] = round(r["gflops"] / peak, 4)


def time_to_goal(res: dict[str, Any]) -> None:
    """Estimate each fit configuration's time to the goal from the steps the unlearning fit needed."""
    fit, rows = res.get("fit"), res.get("unlearning", {}).get("rows", [])
    run = next((r for r in rows if fit and r["model"] == fit["model"]), None)
    if not fit or run is None:
        return
    steps, reached = run["fit"]["steps"], run["fit"]["goal_reached"]
    for r in fit["rows"]:
        if "steps_per_s" in r:
            r["time_to_goal_s_est"] = round(steps / r["steps_per_s"], 1)
    fit["time_to_goal_note"] = (f"Est. s to goal = the {steps} training steps the default fit of {run['model']} took "
                                f"({'reaching' if reached else 'without reaching'} its labeller goal of {run['fit']['goal']}) / that row's "
                                f"steps/s (training steps only; the fit's collection rounds come on top, measured {run['fit']['seconds']:.0f} s in all).")  # fmt: skip


def run_serve(cfg: BenchConfig) -> dict[str, Any]:
    try:
        from benchmarks import serve_load
    except ImportError as exc:
        return {"reason": f"benchmarks/serve_load.py unavailable ({exc})"}
    from feature_unlearn.export import ExportConfig, export_model

    name = "faces-dcgan" if shipped("faces-dcgan") else next((m for m in cfg.models if shipped(m)), "mnist-vae")
    args = argparse.Namespace(seconds=cfg.serve_seconds, warmup=2.0, clients=32, images=4, max_requests=500_000, max_batch=64,
                              max_delay_ms=5.0, threads=None, baseline_seconds=4.0)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run = write_run(Path(tmp) / name, load_bench_model(name), guarded=True)
        artifact = Path(tmp) / "export"
        export_model(ExportConfig(source=str(run), out=artifact))
        try:
            r = serve_load.measure(artifact, args)
        except (SystemExit, OSError, RuntimeError, AttributeError, KeyError) as exc:
            return {"model": name, "error": f"{type(exc).__name__}: {exc}"[:600]}
    return {**r, "model": name, "markdown": serve_load.markdown(r)}


def _inference(cfg: BenchConfig, res: dict[str, Any]) -> None:
    from benchmarks.inference import run_inference

    inf = run_inference(cfg, res["machine"]["gemm_peak_start"])
    worst = max(
        (g["overhead"] for g in inf["guard_overhead"] if g["backend"] == "onnxruntime-cpu" and g["batch"] == 64),
        default=None,
    )
    res |= {"inference": inf["rows"], "models": inf["models"], "skipped": inf["skipped"], "failures": inf["failures"],
            "memory": {"method": MEMORY_METHOD, "rows": inf["memory"]},
            "guard_overhead": {"backend": "onnxruntime-cpu", "batch": 64, "rows": inf["guard_overhead"], "fraction": worst}}  # fmt: skip


def _fit(cfg: BenchConfig, res: dict[str, Any]) -> None:
    from benchmarks.fitbench import run_fit_speed

    res["fit"] = run_fit_speed(cfg)


def _unlearning(cfg: BenchConfig, res: dict[str, Any]) -> None:
    from benchmarks.unlearning import run_unlearning

    res["unlearning"] = run_unlearning(cfg)


def _serve(cfg: BenchConfig, res: dict[str, Any]) -> None:
    res["serve"] = run_serve(cfg)


def noisy(res: dict[str, Any]) -> str | None:
    """Which measurements other jobs disturbed: CPU they used during timed inference rounds and at section starts."""
    points = sorted(
        {
            (r["model"], r["batch"], r["foreign_cores"])
            for r in res.get("inference", [])
            if r.get("foreign_cores", 0) > FOREIGN_LIMIT
        }
    )
    sections = {k: v for k, v in res["machine"]["foreign_cores_at_section_start"].items() if v > FOREIGN_LIMIT}
    if not points and not sections:
        return None
    parts = [f"{m} batch {b} ({c:.2f} cores)" for m, b, c in points] + [
        f"{k} section start ({v:.2f} cores)" for k, v in sections.items()
    ]
    return (
        f"other processes used more than {FOREIGN_LIMIT} of the {res['machine']['cores']} cores during: "
        + "; ".join(parts)
    )


def finish(cfg: BenchConfig, res: dict[str, Any], started: float, final: bool) -> None:
    """Derived figures and the outputs; called after every section (final=False: partial, marked incomplete)."""
    m = res["machine"]
    m["gemm_peak_end"] = round(gemm_peak(), 1) if final else None
    m["gemm_peak_gflops"] = max(m["gemm_peak_start"], m["gemm_peak_end"] or 0.0)
    m["load_end"], m["wall_s"] = round(os.getloadavg()[0], 2), round(time.perf_counter() - started, 1)
    m["noisy"] = noisy(res)
    res["complete"] = final
    annotate_roofline(res, m["gemm_peak_gflops"])
    time_to_goal(res)
    res["targets"] = all_targets(res)
    write_report(res, cfg.out)
    write_json(
        cfg.results_json,
        {**res, "serve": {k: v for k, v in res["serve"].items() if k != "markdown"}} if "serve" in res else res,
    )


def rerender(cfg: BenchConfig) -> dict[str, Any]:
    """RESULTS.md, plots and targets again from ``cfg.results_json``, without measuring anything."""
    from feature_unlearn.unlearn.io import read_json

    res = read_json(cfg.results_json, "benchmark results")
    if "serve" in res and "http" in res["serve"]:
        from benchmarks import serve_load

        res["serve"]["markdown"] = serve_load.markdown(res["serve"])
    res["targets"] = all_targets(res)
    write_report(res, cfg.out)
    write_json(cfg.results_json, {**res, "serve": {k: v for k, v in res["serve"].items() if k != "markdown"}} if "serve" in res else res)
    return res


def run_bench(cfg: BenchConfig, command: str = "unlearn-cli bench") -> dict[str, Any]:
    """Run the sections ``cfg`` enables; write ``cfg.results_json``, ``cfg.out``/RESULTS.md and plots; return the results.

    The outputs are rewritten after every section, so a run stopped halfway leaves what it measured (``complete``: false).
    """
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    res: dict[str, Any] = {"machine": machine(cfg, command), "config": cfg.as_dict(), "complete": False}
    res["machine"]["foreign_cores_at_section_start"] = {}
    sections = [("inference", cfg.inference, _inference), ("fit", cfg.fit, _fit), ("unlearning", cfg.unlearning, _unlearning),
                ("serve", cfg.serve, _serve)]  # fmt: skip
    enabled = [(name, fn) for name, on, fn in sections if on]
    for i, (name, fn) in enumerate(enabled):
        res["machine"]["foreign_cores_at_section_start"][name] = idle_probe(1.0)
        fn(cfg, res)
        if i < len(enabled) - 1:
            finish(cfg, res, started, final=False)
    finish(cfg, res, started, final=True)
    return res
