"""fp16 export: the generator in half precision, the guard's decision kept in fp32."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.fp16 import FLOAT16, fp16_ops, guard_dtypes
from feature_unlearn.export.source import load_source
from feature_unlearn.export.spec import DEFAULT_SPEC
from feature_unlearn.unlearn.guard import GuardedGenerator, LatentGuard
from tests.helpers import guard_entry, make_generator, near_threshold, save_run

pytestmark = pytest.mark.slow  # two exports of a 3-channel generator back every test


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("fp16")
    run = save_run(root / "run", make_generator("dcgan", channels=3), guard_entry(threshold=0.3))
    export_model(ExportConfig(source=str(run), out=root / "fp32"))
    export_model(ExportConfig(source=str(run), out=root / "fp16", fp16=True))
    return run, root / "fp32", root / "fp16"


def _run(path: Path, z: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"z": z})


def test_graph_is_half_but_guard_is_fp32(pair: tuple[Path, Path, Path]) -> None:
    _, _, fp16 = pair
    model = onnx.load(str(fp16 / "model.onnx"))
    assert guard_dtypes(model, DEFAULT_SPEC)[FLOAT16] == 0  # nothing feeding flagged/score is fp16
    assert fp16_ops(model)["ConvTranspose"] == 4  # every layer of the generator runs in fp16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 interface
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == FLOAT16]
    assert casts and "z" not in {
        i for n in casts for i in n.input
    }  # z itself is never cast to fp16 (the guard's output is)
    manifest = json.loads((fp16 / "manifest.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["info"]["validation"]["fp16_ops"]["ConvTranspose"] == 4


def test_decisions_near_threshold_match_fp32_exactly(pair: tuple[Path, Path, Path]) -> None:
    run, fp32, fp16 = pair
    guard = load_source(str(run)).guard
    assert guard is not None
    z = near_threshold(np.array(guard.direction[0], np.float32), guard.threshold[0], n=4096, spread=1e-3)
    a, b = _run(fp32, z), _run(fp16, z)
    assert 1000 < a[1].sum() < 3000  # both sides of t are exercised
    assert (a[1] == b[1]).all() and (a[2] == b[2]).all()  # bit-identical decisions and scores
    d = np.abs(a[0].astype(int) - b[0].astype(int))
    assert d.max() <= DEFAULT_SPEC.fp16_image_atol and d.mean() <= DEFAULT_SPEC.fp16_image_mean


def test_casting_z_to_fp16_first_flips_decisions(pair: tuple[Path, Path, Path]) -> None:
    """Why the guard is fed from the fp32 input: a keep-io-types style conversion (z -> fp16, then the
    guard) flips decisions near t. This is the failure the fp16 export is built to avoid."""
    run, _, _ = pair
    src = load_source(str(run))
    assert src.guard is not None
    u, t = np.array(src.guard.direction[0], np.float32), src.guard.threshold[0]
    guard = LatentGuard(torch.tensor(src.guard.direction), torch.tensor(src.guard.threshold), "flag")
    z = near_threshold(u, t, n=4096, spread=1e-3)
    with torch.no_grad():
        _, exact, _ = guard(torch.from_numpy(z))
        naive = GuardedGenerator(copy.deepcopy(src.generator).half(), copy.deepcopy(guard).half())
        _, rounded, _ = naive(torch.from_numpy(z).half())
    assert (rounded != exact).sum() > 100


def _trained() -> str | None:
    from feature_unlearn.unlearn.zoo import GENERATORS, zoo_names

    return next((n for n in zoo_names() if n in GENERATORS), None)


@pytest.mark.skipif(_trained() is None, reason="no zoo generator weights are shipped in this checkout yet")
def test_trained_generator_fp16_export(tmp_path: Path) -> None:
    """A trained generator (large activations) passes fp16 validation and keeps fp32 decisions near t."""
    from feature_unlearn.unlearn.zoo import load_generator

    name = _trained()
    assert name is not None
    g = load_generator(name)
    guard = guard_entry(threshold=0.5, z_dim=int(g.z_dim))
    run = save_run(tmp_path / "run", g, guard, base_model=name)
    export_model(ExportConfig(source=str(run), out=tmp_path / "fp32"))
    export_model(ExportConfig(source=str(run), out=tmp_path / "fp16", fp16=True))
    z = near_threshold(np.array(guard["direction"][0], np.float32), 0.5, n=2048, spread=1e-3)
    a, b = _run(tmp_path / "fp32", z), _run(tmp_path / "fp16", z)
    assert (a[1] == b[1]).all() and (a[2] == b[2]).all() and 0 < a[1].sum() < len(z)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() <= DEFAULT_SPEC.fp16_image_mean
