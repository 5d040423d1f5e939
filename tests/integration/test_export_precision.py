"""export --precision bf16 | int8: reduced generators behind an fp32 guard, validated, gated, served."""

from __future__ import annotations

import builtins
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.gates import QualityGateError
from feature_unlearn.export.precision import cpu_flags
from feature_unlearn.export.source import load_source
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.serve.runtime import CPU, ModelLoadError, SafeGenerator
from tests.helpers import guard_entry, make_generator, near_threshold, save_run

pytestmark = pytest.mark.slow  # every test here exports a generator
GATE_N = 512  # latents the quality gates judge in these tests (10,000 by default)
HAS_BF16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run of a tiny 3-channel DCGAN exported at fp32 and int8 (and bf16 where the CPU has it)."""
    root = tmp_path_factory.mktemp("precision")
    run = save_run(root / "run", make_generator("dcgan", channels=1), guard_entry(threshold=0.3))
    out = {"run": run}
    for precision in ("fp32", "int8", "bf16")[: 2 + HAS_BF16]:
        out[precision] = root / precision
        cfg = ExportConfig(source=str(run), out=out[precision], precision=precision, calibration="256")
        export_model(dataclasses.replace(cfg, gate_samples=GATE_N))
    return out


def _near(exports: dict[str, Path]) -> np.ndarray:
    guard = load_source(str(exports["run"])).guard
    assert guard is not None
    return near_threshold(np.array(guard.direction[0], np.float32), guard.threshold[0], n=768, spread=1e-3)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_keeps_fp32_decisions_and_close_images(exports: dict[str, Path], precision: str) -> None:
    if precision not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    fp32 = SafeGenerator.load(exports["fp32"], threads=1)
    low = SafeGenerator.load(exports[precision], threads=1, **({"fp32_below": 1} if precision == "bf16" else {}))
    assert low.precision == precision and low.info()["precision"] == precision
    z = np.concatenate([_near(exports), np.random.default_rng(1).standard_normal((256, fp32.z_dim), np.float32)])
    a, b = fp32.generate(z=z), low.generate(z=z)
    assert 200 < a.flagged.sum() < 800  # both sides of t are exercised
    np.testing.assert_array_equal(a.flagged, b.flagged)  # the guard runs in fp32 in every precision
    if precision == "int8":  # the same ONNX Runtime kernels compute the scores: bit for bit
        np.testing.assert_array_equal(a.scores, b.scores)
    d = np.abs(a.images.astype(int) - b.images.astype(int))
    assert d.mean() <= (4.0 if precision == "int8" else 0.5) and d.max() <= (255 if precision == "int8" else 12)
    assert d.max() > 0  # it really is another precision


def test_bf16_runs_small_batches_on_its_fp32_graph(exports: dict[str, Path]) -> None:
    if "bf16" not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    program = json.loads((exports["bf16"] / "manifest.json").read_text())["info"]["program"]
    assert program["fp32_below"] >= 1 and set(program["timed_ms"]) == {"1", "2", "4", "8", "16", "32", "64", "128"}
    assert SafeGenerator.load(exports["bf16"]).fp32_below == program["fp32_below"]  # measured at export
    fp32, low = SafeGenerator.load(exports["fp32"]), SafeGenerator.load(exports["bf16"], fp32_below=5)
    z = np.random.default_rng(2).standard_normal((5, fp32.z_dim), np.float32)
    np.testing.assert_array_equal(low.generate(z=z[:4]).images, fp32.generate(z=z[:4]).images)  # fp32 graph
    assert (low.generate(z=z).images != fp32.generate(z=z).images).any()  # from 5 on: the bf16 program
    with pytest.raises(ValueError, match="fp32_below must be a positive integer"):
        SafeGenerator.load(exports["bf16"], fp32_below=0)


def test_manifest_records_error_gate_and_backend(exports: dict[str, Path]) -> None:
    m = json.loads((exports["int8"] / "manifest.json").read_text())
    info = m["info"]
    assert m["precision"] == "int8" and info["validation"]["backend"] == "onnxruntime"
    assert info["int8"]["calibration"] == {"method": "percentile", "latents": 256}
    gate = info["quality_gate"]
    assert gate["run"] and gate["passed"] and gate["n"] == GATE_N and gate["auditor"] == "mnist-auditor"
    assert abs(gate["fid_change"]) <= 0.02 and all(abs(v) <= 0.2 for v in gate["rate_shift_pp"].values())
    pixels = gate["pixels"]  # the int8 images against the fp32 graph's, on the gate's latents
    assert pixels["max"] >= 1 and 0 < pixels["mean"] < 4 and 0 <= pixels["images_over_4"] <= GATE_N
    assert m["self_test"]["thumb_tolerance"] >= 3.0
    graph = onnx.load(str(exports["int8"] / "model.onnx")).graph
    kinds = [n.op_type for n in graph.node]
    # ngf 8: 32 -> 16 channels becomes int8 phase convs; the 8- and 1-channel layers stay fp32 ConvTranspose
    assert kinds.count("ConvTranspose") == 2 and {"QuantizeLinear", "DequantizeLinear", "Conv"} <= set(kinds)


def test_quality_gate_refuses_with_the_numbers(exports: dict[str, Path], tmp_path: Path) -> None:
    strict = ExportSpec(gate_fid_rel=0.0, gate_rate_pp=0.0)
    cfg = ExportConfig(
        source=str(exports["run"]), out=tmp_path / "x", precision="int8", calibration="64", gate_samples=GATE_N
    )
    with pytest.raises(QualityGateError, match=r"--precision int8: quality gate failed on 512 latents .*FID"):
        export_model(dataclasses.replace(cfg, spec=strict))
    assert not (tmp_path / "x").exists()  # nothing published


def test_compiled_program_pads_and_chunks_batches_like_the_uncompiled_one(exports: dict[str, Path]) -> None:
    if "bf16" not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    program = json.loads((exports["bf16"] / "manifest.json").read_text())["info"]["program"]
    assert program["compile"] == {"backend": "inductor", "options": {"freezing": True}, "buckets": [16, 32, 64, 128]}
    compiled = SafeGenerator.load(exports["bf16"], threads=1, fp32_below=1)
    eager = SafeGenerator.load(exports["bf16"], threads=1, fp32_below=1, compile_program=False)
    assert compiled.timings["program_load_s"] > eager.timings["program_load_s"]  # compiled at load
    rest = np.random.default_rng(2).standard_normal((300, compiled.z_dim), np.float32)
    z = np.concatenate([_near(exports)[::2], rest])
    for rows in (z[:3], z[:17], z):  # padded to a bucket (16, 32); chunks of 128 and a padded remainder
        a, b = compiled.generate(z=rows), eager.generate(z=rows)
        assert a.images.shape == b.images.shape == (len(rows), *compiled.image_shape)
        np.testing.assert_array_equal(a.flagged, b.flagged)  # the fp32 guard decides the same
        assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 4  # bf16 fused differently


def test_a_program_that_cannot_compile_is_a_one_line_refusal(
    exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    if "bf16" not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    import torch

    def no_compiler(module: Any, **kwargs: Any) -> Any:
        def run(*args: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")

        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(ModelLoadError, match=r"compiling it with Inductor failed \(InvalidCxxCompiler.*g\+\+.*"):
        SafeGenerator.load(exports["bf16"], fp32_below=1)
    assert SafeGenerator.load(exports["bf16"], fp32_below=1, compile_program=False).precision == "bf16"
    never = SafeGenerator.load(exports["bf16"], max_batch=64, fp32_below=65)  # the program never runs
    assert never.generate(n=64, seed=1).images.shape[0] == 64  # nothing was compiled, so nothing failed


def test_tampered_program_and_missing_torch_are_one_line_refusals(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "bf16" not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    art = tmp_path / "art"
    shutil.copytree(exports["bf16"], art)
    real_import = builtins.__import__

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_torch)
        with pytest.raises(ModelLoadError, match="runs on PyTorch, which is not installed: pip install torch"):
            SafeGenerator.load(art)
    weights = art / "model.bf16.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with monkeypatch.context() as m:  # as on a GPU machine: asking for CUDA would silently run on the CPU
        m.setattr("feature_unlearn.serve.runtime.ort.get_available_providers", lambda: ["CUDAExecutionProvider", CPU])
        with pytest.raises(ModelLoadError, match="a bf16 artifact runs its PyTorch program on the CPU"):
            SafeGenerator.load(exports["bf16"], providers="cuda")
    weights = art / "model.bf16.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ModelLoadError, match="model.bf16.safetensors: sha256 differs .* changed after export"):
        SafeGenerator.load(art)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int4"], "--precision 'int4': choose from fp32, fp16, bf16, int8"),
        (["--precision", "int8", "--calibration", "0"], "--calibration 0: int8 needs calibration latents"),
        (["--precision", "int8", "--fp16"], "--fp16 with --precision int8: give one precision"),
        (["--precision", "int8", "--tensorrt"], "--precision int8 with --tensorrt"),
    ],
)
def test_cli_precision_bad_input_is_one_line_exit_2(
    exports: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from feature_unlearn.cli import app

    result = CliRunner().invoke(app, ["export", str(exports["run"]), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_http_service_serves_every_precision(exports: dict[str, Path], precision: str) -> None:
    if precision not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    from fastapi.testclient import TestClient

    from feature_unlearn.serve.http import create_app
    from tests.helpers import JSON, config, decode_images, wait_ready

    gen = SafeGenerator.load(exports[precision], threads=1)
    with TestClient(create_app(config(exports[precision]))) as client:
        wait_ready(client)
        r = client.post("/v1/generate", content=json.dumps({"n": 3, "seed": 5}), headers=JSON)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(decode_images(r.json()), gen.generate(n=3, seed=5).images)
        model = client.get("/v1/model").json()
        assert model["precision"] == precision


def test_service_takes_the_fp32_crossover_from_its_flag(exports: dict[str, Path]) -> None:
    if "bf16" not in exports:
        pytest.skip("this CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)")
    from fastapi.testclient import TestClient

    from feature_unlearn.serve.config import ServeError
    from feature_unlearn.serve.http import create_app
    from tests.helpers import JSON, config, decode_images, wait_ready

    program = SafeGenerator.load(exports["bf16"], threads=1, fp32_below=1).generate(n=3, seed=5).images
    fp32 = SafeGenerator.load(exports["fp32"], threads=1).generate(n=3, seed=5).images
    assert (program != fp32).any()
    with TestClient(create_app(config(exports["bf16"], fp32_below=1))) as client:  # --fp32-below 1: always bf16
        wait_ready(client)
        r = client.post("/v1/generate", content=json.dumps({"n": 3, "seed": 5}), headers=JSON)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(decode_images(r.json()), program)
        assert client.get("/v1/model").json()["fp32_below"] == 1
    eager = SafeGenerator.load(exports["bf16"], threads=1, fp32_below=1, compile_program=False)
    with TestClient(create_app(config(exports["bf16"], fp32_below=1, eager_program=True))) as client:
        wait_ready(client)  # --eager-program: the program as rebuilt, uncompiled
        r = client.post("/v1/generate", content=json.dumps({"n": 3, "seed": 5}), headers=JSON)
        np.testing.assert_array_equal(decode_images(r.json()), eager.generate(n=3, seed=5).images)
    with pytest.raises(ServeError, match="--fp32-below 0: must be a positive integer"):
        config(exports["bf16"], fp32_below=0)
