"""Reduced precisions in the inference bench: export each, and what its manifest and first load say.

Every precision is exported by ``unlearn-cli export --precision`` from the same guarded run as the
fp32 row (quality gate included, on ``Scale.gate_samples`` latents) and timed through the service's
loader beside ONNX Runtime fp32 (``benchmarks.inference``). This file builds the exports and the
``PrecisionRow``: the error against fp32 PyTorch that export validation measured, the auditor's
rates and FID change from the quality gate, export time, and the runtime's load and first request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import one_line
from benchmarks.records import Failure, PrecisionRow
from feature_unlearn.serve.runtime import SafeGenerator

BACKEND = {"int8": "onnxruntime-cpu-int8", "bf16": "pytorch-cpu-bf16"}  # the inference rows' names
Export = Callable[[str, Path, str], dict[str, Any]]  # (model, out, precision) -> export summary


def _first_use(path: Path, threads: int) -> tuple[float, float]:
    started = time.perf_counter()
    gen = SafeGenerator.load(path, threads=threads)
    loaded = time.perf_counter()
    gen.generate(n=1, seed=0)
    return round(loaded - started, 3), round(time.perf_counter() - loaded, 4)


def row(name: str, precision: str, path: Path, threads: int) -> PrecisionRow:
    manifest = json.loads((path / "manifest.json").read_text())
    info = manifest["info"]
    case = info["validation"]["cases"]["random-batch-300"]
    gate = info.get("quality_gate", {})
    rates = (gate.get("fp32", {}).get("rates", {}), gate.get(precision, {}).get("rates", {}))
    load_s, first_s = _first_use(path, threads)
    return PrecisionRow(
        model=name,
        precision=precision,
        backend=BACKEND[precision],
        export_s=float(info["export_seconds"]),
        image_max=int(case["image_max"]),
        image_mean=float(case["image_mean"]),
        rate_shift_pp=max((abs(v) for v in gate.get("rate_shift_pp", {}).values()), default=None),
        rates={k: (rates[0][k], rates[1].get(k)) for k in rates[0]},
        fid_change=gate.get("fid_change"),
        gate=gate.get("auditor") if gate.get("run") else gate.get("why"),
        load_s=load_s,
        first_request_s=first_s,
        gate_pixels=gate.get("pixels"),
        fp32_below=info.get("program", {}).get("fp32_below"),
    )


def exports(
    name: str, tmp: Path, precisions: tuple[str, ...], export: Export, threads: int
) -> tuple[dict[str, Path], tuple[PrecisionRow, ...], tuple[Failure, ...]]:
    """Each reduced precision of ``name`` that exports here (a refused one is a failure with its reason)."""
    paths, rows, failures = {}, [], []
    for precision in precisions:
        out = tmp / f"{name}-{precision}"
        try:
            export(name, out, precision)
        except Exception as exc:  # noqa: BLE001 - a refused precision is reported, not fatal
            failures.append(Failure(BACKEND[precision], one_line(exc), name))
            continue
        paths[precision] = out
        rows.append(row(name, precision, out, threads))
    return paths, tuple(rows), tuple(failures)
