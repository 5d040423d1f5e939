"""TensorRT engines and GPU parity: run where a CUDA GPU (and tensorrt / onnxruntime-gpu) exist; skipped elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_unlearn.export import ExportConfig, TensorRTUnavailableError, export_model
from feature_unlearn.export.module import build_module
from feature_unlearn.export.source import load_source
from feature_unlearn.export.tensorrt import engine_runner, require_tensorrt
from tests.helpers import guard_entry, make_generator, save_run


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: the no-GPU message cannot be tested here")
def test_require_tensorrt_explains_what_is_missing() -> None:
    with pytest.raises(TensorRTUnavailableError, match="needs a CUDA GPU"):
        require_tensorrt()


@pytest.mark.gpu
def test_engine_build_and_triton_plan(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed")
    run = save_run(tmp_path / "run", make_generator("dcgan", channels=3), guard_entry())
    export_model(
        ExportConfig(source=str(run), out=tmp_path / "out", fp16=True, tensorrt=True, triton=tmp_path / "repo")
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        manifest["info"]["tensorrt"]["profile"] == [1, 64, 256] and (tmp_path / "out" / "model.plan").stat().st_size > 0
    )
    assert (tmp_path / "out" / "timing.cache").is_file()
    assert (tmp_path / "repo" / "run-trt" / "1" / "model.plan").is_file()


@pytest.mark.gpu
def test_fp16_full_parity_on_cuda(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (install onnxruntime-gpu instead of onnxruntime)")
    run = save_run(tmp_path / "run", make_generator("dcgan", channels=3), guard_entry())
    export_model(ExportConfig(source=str(run), out=tmp_path / "out", fp16=True))
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CUDAExecutionProvider"])
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    src = load_source(str(run))
    module = build_module(src.generator, src.guard, "shift", fp16=True).cuda()
    z = np.random.default_rng(0).standard_normal((256, 8), dtype=np.float32)
    image, flagged, score = sess.run(None, {"z": z})
    with torch.no_grad():
        ref = [t.cpu().numpy() for t in module(torch.from_numpy(z).cuda())]
    assert np.abs(image.astype(int) - ref[0].astype(int)).max() <= 1 and (flagged == ref[1]).all()
    np.testing.assert_allclose(score, ref[2], atol=1e-4)


@pytest.mark.gpu
def test_bf16_engine_from_the_bf16_graph(tmp_path: Path) -> None:
    """--precision bf16 --tensorrt: the engine is built from model.bf16.onnx, runs bf16, and keeps the fp32 guard."""
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed")
    run = save_run(tmp_path / "run", make_generator("dcgan", channels=3), guard_entry())
    export_model(
        ExportConfig(source=str(run), out=tmp_path / "out", precision="bf16", tensorrt=True, triton=tmp_path / "repo")
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    engine = manifest["info"]["tensorrt"]
    assert engine["graph"] == "model.bf16.onnx" and engine["bf16_graph"]["bf16_ops"]["ConvTranspose"] == 4
    assert set(manifest["files"]) >= {"model.onnx", "model.plan", "model.bf16.onnx"}
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["run-trt"]  # no onnx entry: it is fp32
    src = load_source(str(run))
    module = build_module(src.generator, src.guard, "shift")
    z = np.random.default_rng(0).standard_normal((64, 8), dtype=np.float32)
    got = engine_runner(tmp_path / "out" / "model.plan")(z)
    with torch.no_grad():
        image, flagged, score = (t.numpy() for t in module(torch.from_numpy(z)))
    d = np.abs(got["image"].astype(int) - image.astype(int))
    assert 0 < d.max() <= 12 and d.mean() <= 0.5  # bf16, within bf16's tolerance of fp32
    assert (got["flagged"] == flagged).all()
    np.testing.assert_allclose(got["score"], score, atol=1e-5)
