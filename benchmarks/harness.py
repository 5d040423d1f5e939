"""``run_bench``: every section ``cfg`` enables on one machine, then the JSON, RESULTS.md and the plots.

Order: machine facts and the fp32 GEMM peak; inference; fit speed; the unlearning table; the HTTP
load test; the GEMM peak again (the roofline uses the better of the two). The outputs are rewritten
after every section, so a run stopped halfway leaves what it measured (``complete``: false).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.config import Run
from benchmarks.measure import gemm_peak, idle_probe, one_line
from benchmarks.records import Machine, Results, all_targets, load
from benchmarks.report import write_report
from feature_unlearn.unlearn.io import read_json, write_json


def machine(cfg: Run, command: str) -> Machine:
    import onnxruntime
    import torch

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":")[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = torch.__version__, onnxruntime.__version__, platform.python_version()
    load, peak = round(os.getloadavg()[0], 2), round(gemm_peak(), 1)
    return Machine(command, date, cpu, os.cpu_count() or 1, cfg.threads, *versions, gpu, load, peak)


def serve(cfg: Run) -> dict[str, Any]:
    """The HTTP load test (benchmarks/serve_load.py) on faces-dcgan behind a shift guard."""
    from benchmarks.inference import export_zoo
    from benchmarks.serve_load import LoadOptions, measure

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        export_zoo("faces-dcgan", Path(tmp) / "export")
        try:
            return {"serve": measure(Path(tmp) / "export", LoadOptions(cfg.serve_seconds), Path(tmp) / "log")}
        except (SystemExit, OSError, RuntimeError, KeyError, ValueError) as exc:
            return {"serve_error": one_line(exc)}


# section -> (module, function): imported when the section runs; a dict return holds several Results fields
SECTIONS = {
    "inference": ("benchmarks.inference", "run_inference"),
    "fit": ("benchmarks.training", "fit_speed"),
    "unlearning": ("benchmarks.training", "run_unlearning"),
    "serve": ("benchmarks.harness", "serve"),
    "resolution": ("benchmarks.resolution", "run_resolution"),
}


def write(cfg: Run, res: Results) -> None:
    write_report(res, cfg.out_dir)
    write_json(cfg.json_path, dataclasses.asdict(res) | {"targets": [dataclasses.asdict(t) for t in all_targets(res)]})


def finish(res: Results, started: float, final: bool) -> Results:
    end = round(gemm_peak(), 1) if final else None
    wall, load = round(time.perf_counter() - started, 1), round(os.getloadavg()[0], 2)
    return replace(res, machine=replace(res.machine, gemm_peak_end=end, load_end=load, wall_s=wall), complete=final)


def run_bench(cfg: Run, command: str = "unlearn-cli bench") -> Results:
    """Run the sections ``cfg`` enables; write ``cfg.json_path``, RESULTS.md and plots under ``cfg.out_dir``."""
    import torch

    torch.set_num_threads(cfg.threads)
    started, res = time.perf_counter(), Results(machine(cfg, command), cfg.as_dict())
    for name, (module, function) in SECTIONS.items():
        if cfg.runs(name):
            probes = res.machine.foreign_cores_at_section_start | {name: idle_probe()}
            res = replace(res, machine=replace(res.machine, foreign_cores_at_section_start=probes))
            out = getattr(importlib.import_module(module), function)(cfg)
            res = replace(res, **(out if isinstance(out, dict) else {name: out}))
            write(cfg, finish(res, started, final=False))
    res = finish(res, started, final=True)
    write(cfg, res)
    return res


def rerender(cfg: Run) -> Results:
    """RESULTS.md, the plots and the JSON (this schema, targets recomputed) from ``cfg.json_path``; measures nothing."""
    res = load(Results, read_json(cfg.json_path, "benchmark results"))
    write(cfg, res)
    return res
