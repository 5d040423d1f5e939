"""manifest.json: what the artifact is, written beside model.onnx and embedded in its metadata.

The schema is ``serve.manifest.Manifest`` (the runtime reads it without torch); this module
fills it from the export: z_dim, the image shape, the guard as the graph holds it, the outputs,
the self-test's known answers and the provenance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch

import feature_unlearn
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.onnx_export import io_shapes
from feature_unlearn.export.source import Source
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.serve.manifest import MANIFEST_FORMAT, GuardSpec, Manifest, SelfTest

_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.FLOAT16: "float16",
}


def _tensors(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shapes = io_shapes(model)

    def row(v: onnx.ValueInfoProto) -> dict[str, Any]:
        return {"name": v.name, "dtype": _DTYPES[v.type.tensor_type.elem_type], "shape": list(shapes[v.name])}

    return [row(v) for v in model.graph.input], [row(v) for v in model.graph.output]


def guard_entry(module: ExportModule) -> dict[str, Any]:
    """The guard exactly as the graph holds it (fp32 unit rows, fp32 thresholds)."""
    if not module.has_direction:
        return {"mode": "off", "direction": None, "threshold": None, "shift": None, "margin": 0.0}
    u, t = module.guard_arrays()
    v = module.guard.v.detach().numpy()
    return {
        "mode": module.guard.mode,
        "direction": _tuples(u),
        "threshold": tuple(float(x) for x in t),
        "shift": None if np.array_equal(u, v) else _tuples(v),  # along û unless the fit kept attributes
        "margin": float(module.guard.m.max()),
    }


def _tuples(rows: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in rows)


def build_manifest(
    source: Source, module: ExportModule, model: onnx.ModelProto, spec: ExportSpec, precision: str, self_test: SelfTest
) -> Manifest:
    """The manifest of one export (without ``files``: those are hashed once the files are final)."""
    inputs, outputs = _tensors(model)
    _, h, w, c = outputs[0]["shape"]
    record = source.meta.record
    features = list(dict.fromkeys(source.guard.features)) if source.guard else []
    g = guard_entry(module)
    keep = source.guard.keep if source.guard and g["shift"] is not None else ()
    info = {
        "feature": ",".join(features) or record.exclude,
        "base_model": record.base_model or source.name,
        "base_sha256": record.base_sha256 or source.meta.sha256,
        "weights_sha256": source.meta.sha256,
        "arch": record.arch,
        "dataset": record.dataset,
        "onnx": {
            "opset": spec.opset,
            "exporter": "torch.onnx.export(dynamo=True)",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
        "package": {"name": "feature-unlearn", "version": feature_unlearn.__version__},
    }
    image = {
        "height": h,
        "width": w,
        "channels": c,
        "dtype": "uint8",
        "layout": "NHWC",
        "formula": "round((x + 1) * 127.5) clipped to [0, 255]",
    }
    return Manifest(
        format_version=MANIFEST_FORMAT,
        name=source.name,
        z_dim=module.z_dim,
        image=image,
        inputs=inputs,
        outputs=outputs,
        guard=GuardSpec(g["mode"], g["direction"], g["threshold"], g["shift"], keep, g["margin"]),
        features=tuple(features),
        precision=precision,
        self_test=self_test,
        info=info,
    )
