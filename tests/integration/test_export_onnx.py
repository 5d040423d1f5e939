"""Guarded ONNX export: the graph contract, the manifest, parity with PyTorch, the guard modes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from feature_unlearn.export import OPSET, ExportConfig, export_model
from feature_unlearn.export.module import build_module
from feature_unlearn.export.source import load_source
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.images import to_uint8
from tests.helpers import Z_DIM, guard_entry, make_generator, save_run

pytestmark = pytest.mark.slow  # every test here exports a generator of its own or reads the module export


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(
        tmp_path_factory.mktemp("run") / "fit-eyeglasses", make_generator("dcgan", channels=3), guard_entry()
    )


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "shift"
    export_model(ExportConfig(source=str(run_dir), out=out))
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])


def test_graph_contract(exported: Path) -> None:
    model = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert sorted(p.name for p in exported.iterdir()) == ["manifest.json", "model.onnx"]  # one file, no external data
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    io = {v.name: v.type.tensor_type for v in [*model.graph.input, *model.graph.output]}
    assert [v.name for v in model.graph.input] == ["z"] and [v.name for v in model.graph.output] == [
        "image",
        "flagged",
        "score",
    ]
    dims = {n: [d.dim_param or d.dim_value for d in t.shape.dim] for n, t in io.items()}
    assert dims == {"z": ["batch", Z_DIM], "image": ["batch", 32, 32, 3], "flagged": ["batch"], "score": ["batch"]}
    P = onnx.TensorProto
    assert [io[n].elem_type for n in ("z", "image", "flagged", "score")] == [P.FLOAT, P.UINT8, P.BOOL, P.FLOAT]


def test_manifest_embedded_and_complete(exported: Path, run_dir: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    embedded = _session(exported).get_modelmeta().custom_metadata_map["manifest"]
    files = manifest.pop("files")
    assert json.loads(embedded) == manifest  # the embedded copy is manifest.json less the file hashes
    assert files == {"model.onnx": hashlib.sha256((exported / "model.onnx").read_bytes()).hexdigest()}
    assert manifest["format_version"] == 2 and manifest["z_dim"] == Z_DIM
    assert {k: manifest["image"][k] for k in ("height", "width", "channels")} == {
        "height": 32,
        "width": 32,
        "channels": 3,
    }
    guard = manifest["guard"]
    assert guard["mode"] == "shift" and guard["threshold"] == [pytest.approx(0.4)]
    assert np.linalg.norm(np.array(guard["direction"]), axis=1) == pytest.approx([1.0], abs=1e-6)
    sidecar = json.loads((run_dir / "generator.json").read_text())
    info = manifest["info"]
    assert info["weights_sha256"] == sidecar["sha256"] and info["base_model"] == "mnist-dcgan"
    assert info["feature"] == "f0" and info["package"]["version"] and info["onnx"]["opset"] == OPSET
    assert manifest["self_test"]["cases"][-3:] == ["below-0", "above-0", "far-0"]
    assert set(info["validation"]["cases"]) >= {
        "random-batch-1",
        "random-batch-13",
        "random-batch-300",
        "near-threshold-0",
        "large-norm-x1000",
    }
    # validation records how far ONNX Runtime's score came from PyTorch's in float32 units (eps32·‖z‖·‖û‖)
    assert info["validation"]["score_tolerance"] == "1e-06 + 8·eps32·‖z‖·‖û‖"
    assert all(0 <= case["score_max_ulps"] <= 4 for case in info["validation"]["cases"].values())


@pytest.mark.parametrize("batch", [1, 5, 300])
def test_matches_pytorch_at_any_batch(exported: Path, run_dir: Path, batch: int) -> None:
    source = load_source(str(run_dir))
    module = build_module(source.generator, source.guard, "shift")
    z = np.random.default_rng(batch).standard_normal((batch, Z_DIM), dtype=np.float32) * 1.5
    image, flagged, score = _session(exported).run(None, {"z": z})
    with torch.no_grad():
        ref = [t.numpy() for t in module(torch.from_numpy(z))]
    assert image.shape == (batch, 32, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - ref[0].astype(int)).max() <= 1
    assert (flagged == ref[1]).all() and (batch == 1 or 0 < flagged.sum() < batch)
    np.testing.assert_allclose(score, ref[2], atol=1e-4)


def test_shift_generates_from_the_projected_latent(exported: Path, run_dir: Path) -> None:
    """A flagged latent's image is f(ẑ) with p(ẑ) = t; an unflagged one is f(z)."""
    source = load_source(str(run_dir))
    u, t = np.array(source.guard.direction[0], np.float32), source.guard.threshold[0]
    z = np.random.default_rng(0).standard_normal((64, Z_DIM), dtype=np.float32) * 2
    image, flagged, score = _session(exported).run(None, {"z": z})
    np.testing.assert_allclose(score, z @ u, atol=1e-5)
    assert (flagged == (z @ u > t)).all()
    z_hat = np.where(flagged[:, None], z - ((z @ u) - t)[:, None] * u, z).astype(np.float32)
    with torch.no_grad():
        direct = to_uint8(source.generator(torch.from_numpy(z_hat))).numpy()
    assert np.abs(image.astype(int) - direct.astype(int)).max() <= 1
    unguarded = to_uint8(source.generator(torch.from_numpy(z)).detach()).numpy()
    moved = (z @ u) - t > 0.5  # far above the threshold: the shift changes the image
    assert (
        moved.sum() >= 5
        and (np.abs(image[moved].astype(int) - unguarded[moved].astype(int)).max(axis=(1, 2, 3)) > 1).all()
    )


@pytest.mark.parametrize("mode", ["flag", "off"])
def test_flag_and_off_modes(run_dir: Path, tmp_path: Path, mode: str) -> None:
    export_model(ExportConfig(source=str(run_dir), out=tmp_path / mode, guard=mode))
    source = load_source(str(run_dir))
    z = np.random.default_rng(1).standard_normal((32, Z_DIM), dtype=np.float32) * 2
    image, flagged, score = _session(tmp_path / mode).run(None, {"z": z})
    u, t = np.array(source.guard.direction[0], np.float32), source.guard.threshold[0]
    with torch.no_grad():
        plain = to_uint8(source.generator(torch.from_numpy(z))).numpy()
    assert np.abs(image.astype(int) - plain.astype(int)).max() <= 1  # generated from z unchanged
    np.testing.assert_allclose(score, z @ u, atol=1e-5)
    assert (flagged == ((z @ u > t) if mode == "flag" else False)).all()
    assert json.loads((tmp_path / mode / "manifest.json").read_text())["guard"]["mode"] == mode


def test_plain_model_exports_unguarded_vae(tmp_path: Path) -> None:
    """A checkpoint without a target vector (a zoo model) exports with the guard off and zero scores."""
    stem = save_run(tmp_path / "zoo-like", make_generator("vae"), None)
    export_model(ExportConfig(source=str(stem), out=tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["guard"] == {"mode": "off", "direction": None, "threshold": None}
    image, flagged, score = _session(tmp_path / "out").run(None, {"z": np.ones((3, Z_DIM), np.float32)})
    assert image.shape == (3, 32, 32, 1) and not flagged.any() and (score == 0).all()


def test_several_directions(tmp_path: Path) -> None:
    run = save_run(tmp_path / "run2", make_generator("vae"), guard_entry(k=2, threshold=0.2))
    export_model(ExportConfig(source=str(run), out=tmp_path / "out"))
    source = load_source(str(run))
    guard = LatentGuard(torch.tensor(source.guard.direction), torch.tensor(source.guard.threshold), "shift")
    z = np.random.default_rng(2).standard_normal((50, Z_DIM), dtype=np.float32) * 2
    _, flagged, score = _session(tmp_path / "out").run(None, {"z": z})
    z_out, ref_flag, ref_score = guard(torch.from_numpy(z))
    assert (flagged == ref_flag.numpy()).all() and flagged.any()
    np.testing.assert_allclose(score, ref_score.numpy(), atol=1e-5)
    # the shifted latents sit at (3 passes of sequential projections: within 1e-3 of) or below every threshold
    assert (z_out @ guard.u.T <= guard.t + 1e-3).all()


def _shipped_generator() -> str | None:
    from feature_unlearn.unlearn.zoo import GENERATORS, zoo_names

    names = [n for n in zoo_names() if n in GENERATORS]
    return next((n for n in names if "dcgan" in n), names[0] if names else None)


@pytest.mark.skipif(_shipped_generator() is None, reason="no zoo generator weights are shipped in this checkout yet")
def test_zoo_model_exports_unguarded_in_under_a_minute(tmp_path: Path) -> None:
    name = _shipped_generator()
    assert name is not None
    result = export_model(ExportConfig(source=name, out=tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["name"] == manifest["info"]["base_model"] == name and manifest["guard"]["mode"] == "off"
    assert result["export_seconds"] < 60
