"""The bf16 ONNX graph behind a bf16 TensorRT engine, checked and run on CPU by ONNX's reference evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from feature_unlearn.export import (
    ExportConfig,
    ExportValidationError,
    TensorRTUnavailableError,
    bf16_graph,
    export_model,
    onnx_export,
    precision,
)
from feature_unlearn.export.fp16 import guard_dtypes
from feature_unlearn.export.module import ExportModule, build_module
from feature_unlearn.export.source import load_source
from feature_unlearn.export.spec import DEFAULT_SPEC
from feature_unlearn.unlearn.errors import ConfigError
from tests.helpers import guard_entry, make_generator, near_threshold, save_run

BF16 = onnx.TensorProto.BFLOAT16


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, onnx.ModelProto, ExportModule, dict]:
    """(bf16 graph, fp32 graph, fp32 module, what was retyped) of a guarded 3-channel DCGAN run."""
    g = make_generator("dcgan", channels=3)
    with torch.no_grad():  # a weight fp16 cannot hold (subnormal there): must come from fp32, not fp16
        next(g.parameters()).view(-1)[0] = 3.0e-6
    run = save_run(tmp_path_factory.mktemp("bf16g") / "run", g, guard_entry(threshold=0.3))
    src = load_source(str(run))
    fp32 = build_module(src.generator, src.guard, "shift")
    half = build_module(src.generator, src.guard, "shift", fp16=True)
    g32 = onnx_export.to_onnx(fp32, DEFAULT_SPEC)
    model, info = bf16_graph.to_bf16_graph(onnx_export.to_onnx(half, DEFAULT_SPEC), g32, DEFAULT_SPEC)
    return model, g32, fp32, info


def test_generator_is_bf16_at_opset_22_and_guard_fp32(graphs: tuple) -> None:
    model, g32, _, info = graphs
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {22}
    assert guard_dtypes(model, DEFAULT_SPEC)[BF16] == 0  # nothing feeding flagged/score is bf16
    assert info["bf16_ops"]["ConvTranspose"] == 4 and info["weights"]["from_fp16"] == 0
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    fp32 = {i.name: numpy_helper.to_array(i) for i in g32.graph.initializer}
    via_fp16 = 0
    for init in (i for i in model.graph.initializer if i.data_type == BF16):
        value = numpy_helper.to_array(init).astype(np.float32)
        twin = fp32[init.name.replace(bf16_graph.HALF_PATH, bf16_graph.FP32_PATH, 1)]
        np.testing.assert_array_equal(value, twin.astype(ml_dtypes.bfloat16).astype(np.float32))
        via_fp16 += int((twin.astype(np.float16).astype(ml_dtypes.bfloat16).astype(np.float32) != value).sum())
    assert via_fp16 > 0  # rounding the fp16 weights instead would have changed some (the 3e-6 one at least)


def test_reference_evaluator_matches_pytorch_fp32_within_bf16(graphs: tuple) -> None:
    model, g32, fp32, _ = graphs
    report = bf16_graph.validate_bf16_graph(model, fp32, DEFAULT_SPEC)
    cases = report["cases"]
    assert {"random-batch-3", "near-threshold-0", "large-norm-x10"} <= set(cases)
    assert all(c["flag_mismatches"] == 0 for c in cases.values())
    assert 0 < cases["random-batch-3"]["image_max"] <= DEFAULT_SPEC.bf16_image_atol  # bf16, not fp32 in disguise
    u, t = fp32.guard_arrays()
    z = near_threshold(u[0].astype(np.float64), float(t[0]), n=4, spread=1e-3)
    _, flagged, score = ReferenceEvaluator(model).run(None, {"z": z})
    _, flagged32, score32 = ReferenceEvaluator(g32).run(None, {"z": z})
    np.testing.assert_array_equal(score, score32)  # the fp32 graph's guard, bit for bit
    np.testing.assert_array_equal(flagged, flagged32)
    assert 0 < int(np.sum(flagged)) < len(z)  # the latents straddle t


def test_validation_refuses_a_wrong_bf16_graph(graphs: tuple) -> None:
    model, _, fp32, _ = graphs
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    conv = next(i for i in broken.graph.initializer if i.data_type == BF16 and len(i.dims) == 4)
    w = numpy_helper.to_array(conv).astype(np.float32)
    conv.CopyFrom(numpy_helper.from_array((1.5 * w).astype(ml_dtypes.bfloat16), conv.name))
    with pytest.raises(ExportValidationError, match="bf16 graph.*grey levels"):
        bf16_graph.validate_bf16_graph(broken, fp32, DEFAULT_SPEC)


def test_bf16_with_triton_needs_tensorrt_and_tensorrt_needs_a_gpu(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})  # what is refused next, on any CPU
    run = save_run(tmp_path / "run", make_generator("dcgan"), guard_entry())
    with pytest.raises(ConfigError, match="--precision bf16 --triton.*add --tensorrt"):
        export_model(ExportConfig(source=str(run), out=tmp_path / "a", precision="bf16", triton=tmp_path / "repo"))
    if not torch.cuda.is_available():
        with pytest.raises(TensorRTUnavailableError, match="needs a CUDA GPU"):
            export_model(ExportConfig(source=str(run), out=tmp_path / "b", precision="bf16", tensorrt=True))
    assert not (tmp_path / "a").exists() and not (tmp_path / "repo").exists()
