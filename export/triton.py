"""A Triton Inference Server model repository entry: config.pbtxt + 1/model.onnx (+ a TensorRT variant).

Triton's batched models drop the batch axis from ``dims``; a per-sample scalar ([batch] in the
graph) is therefore ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from feature_unlearn.export.spec import ExportSpec

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def _tensor(t: dict[str, Any]) -> str:
    dims = t["shape"][1:]  # without the batch axis
    shape = f"dims: [ {', '.join(str(d) for d in dims)} ]" if dims else "dims: [ 1 ]\n    reshape: { shape: [ ] }"
    return f'  {{\n    name: "{t["name"]}"\n    data_type: {_TRITON_TYPES[t["dtype"]]}\n    {shape}\n  }}'


def config_text(name: str, manifest: dict[str, Any], spec: ExportSpec, plan: bool = False) -> str:
    """config.pbtxt for the onnxruntime backend (or TensorRT's with ``plan``)."""
    runtime = 'platform: "tensorrt_plan"' if plan else 'backend: "onnxruntime"'
    kind = "KIND_GPU" if plan else "KIND_AUTO"
    preferred = ", ".join(str(b) for b in spec.triton_preferred_batches if b <= spec.triton_max_batch)
    return "\n".join(
        [
            f'name: "{name}"',
            runtime,
            f"max_batch_size: {spec.triton_max_batch}",
            "input [\n" + ",\n".join(_tensor(t) for t in manifest["inputs"]) + "\n]",
            "output [\n" + ",\n".join(_tensor(t) for t in manifest["outputs"]) + "\n]",
            f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
            f"  max_queue_delay_microseconds: {spec.triton_queue_delay_us}\n}}",
            f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]",
            "",
        ]
    )


def stage(repo: Path, name: str, files: dict[str, Path], config: str) -> Path:
    """Write ``REPO/.<name>.*`` with config.pbtxt, 1/<file> and manifest.json; returns the staging dir."""
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    (tmp / "1").mkdir()
    (tmp / "config.pbtxt").write_text(config)
    for target, src in files.items():
        shutil.copyfile(src, tmp / target)
    return tmp


def stage_repository(
    repo: Path, name: str, out_dir: Path, manifest: dict[str, Any], spec: ExportSpec
) -> dict[str, Path]:
    """Staging dirs (final name -> temp dir) for the onnx entry and, when an engine exists, the plan entry.

    A bf16 export gets the plan entry only: its model.onnx is the fp32 graph (the bf16 program runs on PyTorch)."""
    staged = {}
    if manifest["precision"] != "bf16":
        staged[name] = stage(
            repo,
            name,
            {"1/model.onnx": out_dir / "model.onnx", "manifest.json": out_dir / "manifest.json"},
            config_text(name, manifest, spec),
        )
    if (out_dir / "model.plan").is_file():
        plan_name = f"{name}-trt"
        staged[plan_name] = stage(
            repo,
            plan_name,
            {"1/model.plan": out_dir / "model.plan", "manifest.json": out_dir / "manifest.json"},
            config_text(plan_name, manifest, spec, plan=True),
        )
    return staged
