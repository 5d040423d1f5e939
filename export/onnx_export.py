"""torch -> ONNX with the dynamo exporter, a dynamic batch, a pinned opset and a full check."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.spec import CHECK_OUTPUTS, ExportSpec


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress and torchvision warnings; keep the CLI's output clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(module: ExportModule, spec: ExportSpec) -> onnx.ModelProto:
    """Export ``module`` (traced at ``spec.trace_batch``) to an in-memory, fully checked ONNX model."""
    z = torch.randn(spec.trace_batch, module.z_dim, generator=torch.Generator().manual_seed(spec.seed))
    batch = torch.export.Dim(spec.batch_axis, min=1)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                module,
                (z,),
                None,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[spec.input_name],
                output_names=list(spec.output_names),
                opset_version=spec.opset,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this generator does not export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.onnx.export (dynamo, opset {spec.opset}) failed: {first[:300]}") from exc
    assert program is not None
    model = program.model_proto
    check(model, spec, module.z_dim)
    return model


def check(model: onnx.ModelProto, spec: ExportSpec, z_dim: int) -> None:
    """``onnx.checker`` full check plus the I/O contract: names, order, dtypes, dynamic batch."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {str(exc).splitlines()[0]}") from None
    want = {
        spec.input_name: onnx.TensorProto.FLOAT,
        spec.output_names[0]: onnx.TensorProto.UINT8,
        spec.output_names[1]: onnx.TensorProto.BOOL,
        spec.output_names[2]: onnx.TensorProto.FLOAT,
        CHECK_OUTPUTS[0]: onnx.TensorProto.BOOL,
        CHECK_OUTPUTS[1]: onnx.TensorProto.FLOAT,
    }
    ios = [*model.graph.input, *model.graph.output]
    if [v.name for v in ios] != list(spec.names):
        raise ExportError(f"graph I/O {[v.name for v in ios]} != {list(spec.names)}")
    for v in ios:
        t = v.type.tensor_type
        if t.elem_type != want[v.name] or t.shape.dim[0].dim_param != spec.batch_axis:
            raise ExportError(f"graph {v.name!r}: dtype {t.elem_type} / axis 0 {t.shape.dim[0]} is not the spec's")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    if dims != [z_dim]:
        raise ExportError(f"graph input {spec.input_name!r} has dims {dims}, expected [{z_dim}]")


def io_shapes(model: onnx.ModelProto) -> dict[str, tuple[Any, ...]]:
    """name -> shape with the batch as its dim_param (e.g. ('batch', 32, 32, 3))."""
    return {
        v.name: tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in [*model.graph.input, *model.graph.output]
    }


def stamp(model: onnx.ModelProto, manifest: dict[str, Any], key: str = "manifest") -> None:
    """Put the manifest (JSON, a string value) into ``metadata_props``, replacing an older one."""
    props = {p.key: p.value for p in model.metadata_props}
    props[key] = json.dumps(manifest, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    model.producer_name = "feature-unlearn"


def save(model: onnx.ModelProto, path: Path) -> None:
    """One self-contained file (no external data)."""
    onnx.save_model(model, str(path), save_as_external_data=False)
