"""manifest.json: what the artifact is, written beside model.onnx and embedded in its metadata.

The runtime (``serve/``) reads only this and the graph, so everything it needs is here:
z_dim, the image shape, the guard (mode, unit direction rows, thresholds), the outputs.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

import unlearn
from export.module import ExportModule
from export.onnx_export import io_shapes
from export.source import Source
from export.spec import MANIFEST_FORMAT, ExportSpec

_DTYPES: dict[int, str] = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool",
           onnx.TensorProto.FLOAT16: "float16"}  # fmt: skip


def _tensors(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shapes = io_shapes(model)

    def row(v: onnx.ValueInfoProto) -> dict[str, Any]:
        return {"name": v.name, "dtype": _DTYPES[v.type.tensor_type.elem_type], "shape": list(shapes[v.name])}

    return [row(v) for v in model.graph.input], [row(v) for v in model.graph.output]


def guard_entry(module: ExportModule) -> dict[str, Any]:
    """The guard exactly as the graph holds it (fp32 unit rows, fp32 thresholds)."""
    if not module.has_direction:
        return {"mode": "off", "direction": None, "threshold": None}
    u, t = module.guard_arrays()
    return {"mode": module.guard.mode, "direction": u.tolist(), "threshold": t.tolist()}


def build_manifest(
    source: Source, module: ExportModule, model: onnx.ModelProto, spec: ExportSpec, fp16: bool
) -> dict[str, Any]:
    inputs, outputs = _tensors(model)
    _, h, w, c = outputs[0]["shape"]
    meta = source.meta
    features = list(source.guard.features) if source.guard else []
    return {
        "format_version": MANIFEST_FORMAT,
        "name": source.name,
        "z_dim": module.z_dim,
        "image": {
            "height": h,
            "width": w,
            "channels": c,
            "dtype": "uint8",
            "layout": "NHWC",
            "formula": "round((x + 1) * 127.5) clipped to [0, 255]",
        },  # fmt: skip
        "inputs": inputs,
        "outputs": outputs,
        "guard": guard_entry(module),
        "feature": ",".join(features) or meta.get("exclude"),
        "features": features,
        "base_model": meta.get("base_model", source.name),
        "base_sha256": meta.get("base_sha256", meta.get("sha256")),
        "weights_sha256": meta.get("sha256"),
        "arch": meta.get("arch"),
        "dataset": meta.get("dataset"),
        "precision": "fp16" if fp16 else "fp32",
        "onnx": {
            "opset": spec.opset,
            "exporter": "torch.onnx.export(dynamo=True)",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },  # fmt: skip
        "package": {"name": "feature-unlearn", "version": unlearn.__version__},
    }
