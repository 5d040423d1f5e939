"""The bf16 ONNX graph TensorRT builds its bf16 engine from (``--precision bf16 --tensorrt``).

TensorRT 11 builds strongly typed networks only: an engine is bf16 where its ONNX graph is. The
dynamo exporter cannot write that graph for our generators (at opset 18 bf16 ConvTranspose does
not exist; at opset 22 it writes the weights as float: "W has inconsistent type"). So the graph is
retyped from the fp16 one, which already has the shape we want (fp32 guard, one Cast of ``z_out``
in front of the generator, half weights, one Cast back to fp32 before the uint8 image): every
fp16 initializer becomes bf16 (rounded from the fp32 weights, not from the fp16 ones), every Cast
to fp16 a Cast to bf16, and the opset 22, where Conv/ConvTranspose gain bf16.

ONNX Runtime has no bf16 convolution on CPU, so the graph is validated here with ONNX's reference
evaluator (numpy, slow: a few latents of each case) against PyTorch fp32, with bf16's tolerances.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from feature_unlearn.export import fp16 as half
from feature_unlearn.export import validate
from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.spec import ExportSpec

BF16_OPSET = 22  # the first opset with bf16 Conv/ConvTranspose
FLOAT16, BFLOAT16 = onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16
GRAPH_FILE = "model.bf16.onnx"


# ``HalfGenerator`` holds the generator one level deeper than the fp32 module does.
HALF_PATH, FP32_PATH = "guarded.generator.generator.", "guarded.generator."


def _retype_initializers(graph: onnx.GraphProto, fp32_graph: onnx.GraphProto) -> dict[str, int]:
    """Every fp16 initializer as bf16, rounded from the fp32 graph's value of the same weight where it has one.

    fp16 -> bf16 would round twice and lose what fp16's range cannot hold (weights under 6e-5)."""
    fp32 = {i.name: numpy_helper.to_array(i) for i in fp32_graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    counts = {"from_fp32": 0, "from_fp16": 0}
    for init in graph.initializer:
        if init.data_type != FLOAT16:
            continue
        half_value = numpy_helper.to_array(init)
        value = fp32.get(init.name.replace(HALF_PATH, FP32_PATH, 1))
        exact = value is not None and value.shape == half_value.shape
        source = value if exact else half_value.astype(np.float32)
        counts["from_fp32" if exact else "from_fp16"] += 1
        init.CopyFrom(numpy_helper.from_array(np.asarray(source).astype(ml_dtypes.bfloat16), init.name))
    return counts


def _retype_casts(graph: onnx.GraphProto) -> int:
    casts = 0
    for node in graph.node:
        if node.op_type == "Constant" and any(a.t.data_type == FLOAT16 for a in node.attribute if a.name == "value"):
            raise ExportError(f"bf16 graph: constant {node.output[0]!r} is fp16; only initializers are retyped")
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT16:
                attr.i, casts = BFLOAT16, casts + 1
    return casts


def to_bf16_graph(
    fp16_model: onnx.ModelProto, fp32_model: onnx.ModelProto, spec: ExportSpec
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The fp16 graph retyped to bf16 at ``BF16_OPSET``, checked like the fp16 graph (the guard never bf16);
    and what was retyped."""
    try:
        model = onnx.version_converter.convert_version(fp16_model, BF16_OPSET)
    except Exception as exc:  # the converter raises RuntimeError or its own types; all mean "no adapter"
        raise ExportError(f"bf16 graph: opset {spec.opset} -> {BF16_OPSET} conversion failed: {exc}") from None
    weights = _retype_initializers(model.graph, fp32_model.graph)
    if _retype_casts(model.graph) == 0:
        raise ExportError("bf16 graph: the fp16 graph has no Cast to fp16 in front of the generator")
    del model.graph.value_info[:]  # fp16 annotations; re-inferred by the checks below
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"bf16 graph: onnx.checker rejected it: {str(exc).splitlines()[0]}") from None
    types = half.element_types(model)
    left = half.fp16_ops(model, types=types)
    if left:
        raise ExportError(f"bf16 graph: fp16 left after retyping: {dict(left)}")
    ops = half.check_fp16(model, spec, BFLOAT16, types)
    return model, {"file": GRAPH_FILE, "opset": BF16_OPSET, "bf16_ops": ops, "weights": weights}


def reference_spec(spec: ExportSpec) -> ExportSpec:
    """Every validation case, with few latents each: the reference evaluator runs ~1 latent per second."""
    return dataclasses.replace(spec, validation_batches=(1, 3), near_threshold_per_offset=1, large_norm_batch=2)


def validate_bf16_graph(model: onnx.ModelProto, reference: ExportModule, spec: ExportSpec) -> dict[str, Any]:
    """The retyped graph on ONNX's reference evaluator vs PyTorch fp32, at bf16's tolerances."""
    evaluator = ReferenceEvaluator(model)

    def run(z: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in evaluator.run(None, {spec.input_name: z})]

    return validate.validate(
        run, reference, reference_spec(spec), precision="bf16", backend="onnx.reference (bf16 graph)"
    )
