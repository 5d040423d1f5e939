"""fp16 graphs: a half-precision generator whose guard decision stays in fp32 (and the checks bf16 graphs share).

Converters that keep float32 I/O (``keep_io_types``) still cast z to fp16 as the first node,
so the projection p(z) is computed on a rounded z and decisions near t flip (measured: hundreds
out of 4,096 near-threshold latents; test_casting_z_to_fp16_first_flips_decisions shows it).
We therefore never convert an fp32 graph: the module is built with the guard in fp32 and only
``z_out`` cast to fp16 in front of the generator (``HalfGenerator``), and this file checks the
exported graph obeys that.
"""

from __future__ import annotations

from collections import Counter

import onnx

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.spec import ExportSpec

FLOAT16 = onnx.TensorProto.FLOAT16


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """tensor name -> ONNX element type, by one shape inference (the checks below share it: it is the slow part)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def ancestors(model: onnx.ModelProto, outputs: tuple[str, ...]) -> tuple[set[str], list[onnx.NodeProto]]:
    """Every tensor and node that ``outputs`` depend on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    tensors, nodes, todo = set(), [], list(outputs)
    while todo:
        name = todo.pop()
        if name in tensors:
            continue
        tensors.add(name)
        node = producer.get(name)
        if node is not None and node not in nodes:
            nodes.append(node)
            todo.extend(i for i in node.input if i)
    return tensors, nodes


def guard_dtypes(model: onnx.ModelProto, spec: ExportSpec, types: dict[str, int] | None = None) -> Counter[int]:
    """Element types of every tensor the flag and score are computed from (``types``: ``element_types(model)``)."""
    types = element_types(model) if types is None else types
    tensors, _ = ancestors(model, spec.output_names[1:3])  # flagged, score (the image check reads the image)
    return Counter(types[t] for t in tensors if t in types)


def fp16_ops(model: onnx.ModelProto, elem_type: int = FLOAT16, types: dict[str, int] | None = None) -> Counter[str]:
    """op_type -> count of nodes with an output of ``elem_type`` (the half-precision part of the graph)."""
    types = element_types(model) if types is None else types
    return Counter(n.op_type for n in model.graph.node if any(types.get(o) == elem_type for o in n.output))


def check_fp16(
    model: onnx.ModelProto, spec: ExportSpec, elem_type: int = FLOAT16, types: dict[str, int] | None = None
) -> dict[str, int]:
    """Raise unless the generator runs in ``elem_type`` (fp16 or bf16) and the guard's flag and score never do."""
    name = "fp16" if elem_type == FLOAT16 else "bf16"
    types = element_types(model) if types is None else types
    guard = guard_dtypes(model, spec, types)
    if guard[elem_type]:
        raise ExportError(
            f"{name} graph: {guard[elem_type]} tensors feeding 'flagged'/'score' are {name}; the guard must stay fp32"
        )
    ops = fp16_ops(model, elem_type, types)
    if not any(op in ops for op in ("Conv", "ConvTranspose", "Gemm", "MatMul")):
        raise ExportError(f"{name} graph: no convolution or matmul runs in {name} ({name} ops: {dict(ops)})")
    return dict(ops)
