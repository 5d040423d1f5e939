"""The torch-free runtime: loading, generation, input validation, providers, threads."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from feature_unlearn.serve import GenerateResult, ModelLoadError, RuntimeInputError, SafeGenerator, resolve_providers
from tests.helpers import Z_DIM


@pytest.fixture(scope="module")
def gen(artifact: Path) -> SafeGenerator:
    return SafeGenerator.load(artifact, max_batch=512)


def test_load_dir_or_file(artifact: Path, gen: SafeGenerator) -> None:
    by_file = SafeGenerator.load(artifact / "model.onnx")
    assert by_file.manifest == gen.manifest == json.loads((artifact / "manifest.json").read_text())
    assert gen.z_dim == Z_DIM and gen.image_shape == (32, 32, 1) and gen.guard["mode"] == "shift"
    assert gen.provider == "CPUExecutionProvider" == gen.info()["provider"] and gen.fallback is None


def test_generate_by_seed_is_repeatable(gen: SafeGenerator) -> None:
    a, b = gen.generate(n=16, seed=7), gen.generate(n=16, seed=7)
    assert isinstance(a, GenerateResult) and len(a) == 16
    assert a.images.dtype == np.uint8 and a.images.shape == (16, 32, 32, 1)
    assert a.flagged.dtype == np.bool_ and a.scores.dtype == np.float32
    assert (a.images == b.images).all() and (
        a.z == np.random.default_rng(7).standard_normal((16, Z_DIM), dtype=np.float32)
    ).all()
    assert not (gen.generate(n=16, seed=8).images == a.images).all()
    assert len(gen.generate()) == 1


def test_generate_from_latents_applies_the_guard(gen: SafeGenerator) -> None:
    u = np.array(gen.guard["direction"][0], np.float32)
    t = gen.guard["threshold"][0]
    z = np.stack([u * (t + 2.0), u * (t - 2.0), u * t + 0.0]).astype(np.float32)
    out = gen.generate(z=z)
    np.testing.assert_allclose(out.scores, [t + 2.0, t - 2.0, t], atol=1e-5)
    assert out.flagged.tolist() == [True, False, False]
    same = gen.generate(z=np.stack([u * t, u * (t - 2.0), u * t]).astype(np.float32))  # the guard moved z[0] onto t
    assert np.abs(out.images[0].astype(int) - same.images[0].astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z": np.full((2, Z_DIM), np.nan, np.float32)}, "NaN or infinity in 2 of 2 rows"),
        ({"z": np.array([[0.0] * Z_DIM, [np.inf] + [0.0] * (Z_DIM - 1)], np.float32)}, r"1 of 2 rows \(first: row 1\)"),
        ({"z": np.zeros((2, Z_DIM), np.float64)}, "float32, got float64"),
        ({"z": np.zeros((2, Z_DIM + 1), np.float32)}, r"shape \[batch, 8\], got \[2, 9\]"),
        ({"z": np.zeros(Z_DIM, np.float32)}, r"shape \[batch, 8\], got \[8\]"),
        ({"z": np.zeros((0, Z_DIM), np.float32)}, "batch = 0: must be between 1 and 512"),
        ({"z": [[0.0] * Z_DIM]}, "numpy array of float32, got list"),
        ({"z": np.zeros((1, Z_DIM), np.float32), "seed": 1}, "not both"),
        ({"n": 0}, "n = 0: must be between 1 and 512"),
        ({"n": 513}, "n = 513"),
        ({"n": 2.5}, "n must be an integer"),
        ({"n": True}, "n must be an integer"),
        ({"n": 2, "seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_input_is_a_clear_error(gen: SafeGenerator, kwargs: dict, message: str) -> None:
    with pytest.raises(RuntimeInputError, match=message):
        gen.generate(**kwargs)


def test_thread_safe(gen: SafeGenerator) -> None:
    expected = {s: gen.generate(n=8, seed=s).images for s in range(8)}
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(s: int) -> None:
        try:
            for _ in range(5):
                got[s] = gen.generate(n=8, seed=s).images
                assert (got[s] == expected[s]).all()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and set(got) == set(expected)


def test_corrupt_or_missing_model(tmp_path: Path, artifact: Path) -> None:
    truncated = (artifact / "model.onnx").read_bytes()[:5000]
    (tmp_path / "model.onnx").write_bytes(truncated)
    with pytest.raises(ModelLoadError, match="manifest.json: not found; it holds the sha256"):
        SafeGenerator.load(tmp_path)
    (tmp_path / "manifest.json").write_text((artifact / "manifest.json").read_text())
    with pytest.raises(ModelLoadError, match="model.onnx: sha256 .* the graph was changed after export"):
        SafeGenerator.load(tmp_path)
    (tmp_path / "manifest.json").unlink()  # a pinned bare model.onnx: authenticated by the pin alone
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load it; corrupt or not an ONNX model"):
        SafeGenerator.load(tmp_path / "model.onnx", pin=hashlib.sha256(truncated).hexdigest())
    with pytest.raises(ModelLoadError, match="not found"):
        SafeGenerator.load(tmp_path / "nowhere")


def test_manifest_must_agree_with_the_graph(tmp_path: Path, artifact: Path) -> None:
    (tmp_path / "model.onnx").write_bytes((artifact / "model.onnx").read_bytes())
    other = json.loads((artifact / "manifest.json").read_text()) | {"name": "someone-else"}
    (tmp_path / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(ModelLoadError, match="does not match the manifest embedded"):
        SafeGenerator.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(other | {"format_version": 1}))
    with pytest.raises(ModelLoadError, match="format_version 1 is not one this runtime reads"):
        SafeGenerator.load(tmp_path)
    model = onnx.load(str(artifact / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "model.onnx"))
    (tmp_path / "manifest.json").unlink()
    pin = hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest()
    with pytest.raises(ModelLoadError, match="no embedded manifest"):
        SafeGenerator.load(tmp_path / "model.onnx", pin=pin)


def test_providers(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelLoadError, match=r"'CUDAExecutionProvider'\] not in this onnxruntime build"):
            SafeGenerator.load(artifact, providers="cuda")
    # ONNX Runtime silently falls back to CPU when CUDA libraries are missing: the runtime says so.
    monkeypatch.setattr(
        "feature_unlearn.serve.runtime.resolve_providers", lambda p: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(
        "feature_unlearn.serve.runtime._session",
        lambda model, path, providers, threads: ort.InferenceSession(model, providers=["CPUExecutionProvider"]),
    )
    with pytest.warns(
        RuntimeWarning, match="asked for CUDAExecutionProvider but ONNX Runtime runs on CPUExecutionProvider"
    ):
        fallen = SafeGenerator.load(artifact)
    assert fallen.provider == "CPUExecutionProvider" and "CUDAExecutionProvider" in str(fallen.info()["fallback"])
