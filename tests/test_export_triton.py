"""Triton model repository: config.pbtxt parsed with Triton's own schema and checked against the graph."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import pytest
from test_export_support import guard_entry, make_generator, save_run

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.spec import DEFAULT_SPEC
from feature_unlearn.export.triton import config_text
from feature_unlearn.unlearn.errors import ConfigError

text_format = pytest.importorskip(
    "google.protobuf.text_format", reason="protobuf is not installed (pip install 'feature-unlearn[dev]')"
)


def _model_config_pb2() -> ModuleType:
    """tritonclient's generated schema, loaded by file: tritonclient.grpc's __init__ wants grpcio, the schema does not."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install 'feature-unlearn[dev]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


PB2 = _model_config_pb2()
_ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


def parse(text: str) -> Any:
    return text_format.Parse(text, PB2.ModelConfig())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton")
    run = save_run(root / "runs" / "no-eyeglasses v2", make_generator("dcgan", channels=3), guard_entry())
    export_model(ExportConfig(source=str(run), out=root / "out", triton=root / "repo"))
    return root / "repo"


def test_layout(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == ["no-eyeglasses-v2"]  # a Triton-safe name from the run's name
    entry = repo / "no-eyeglasses-v2"
    assert sorted(str(p.relative_to(entry)) for p in entry.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
        "manifest.json",
    ]
    assert (entry / "1" / "model.onnx").read_bytes() == (repo.parent / "out" / "model.onnx").read_bytes()


def test_config_matches_the_graph(repo: Path) -> None:
    entry = repo / "no-eyeglasses-v2"
    cfg = parse((entry / "config.pbtxt").read_text())
    model = onnx.load(str(entry / "1" / "model.onnx"))
    assert cfg.name == "no-eyeglasses-v2" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == DEFAULT_SPEC.triton_max_batch
    assert list(cfg.dynamic_batching.preferred_batch_size) == [64, 256] and cfg.instance_group[0].count == 1
    for declared, graph in ((cfg.input, model.graph.input), (cfg.output, model.graph.output)):
        assert [t.name for t in declared] == [v.name for v in graph]
        for t, v in zip(declared, graph, strict=True):
            tt = v.type.tensor_type
            assert PB2.DataType.Name(t.data_type) == _ONNX_TO_TRITON[tt.elem_type]
            graph_dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
            assert graph_dims[0] == "batch"  # Triton adds the batch axis itself
            per_sample = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            assert per_sample == graph_dims[1:], t.name


def test_plan_variant_parses() -> None:
    manifest = {"inputs": [{"name": "z", "dtype": "float32", "shape": ["batch", 64]}],
                "outputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", 32, 32, 3]},
                            {"name": "flagged", "dtype": "bool", "shape": ["batch"]},
                            {"name": "score", "dtype": "float32", "shape": ["batch"]}]}  # fmt: skip
    cfg = parse(config_text("m-trt", manifest, DEFAULT_SPEC, plan=True))
    assert (
        cfg.platform == "tensorrt_plan" and PB2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    )
    assert [list(o.dims) for o in cfg.output] == [[32, 32, 3], [1], [1]]


def test_unknown_fields_are_rejected_by_the_schema() -> None:
    with pytest.raises(text_format.ParseError):
        parse('name: "x"\nmax_batch: 4\n')


def test_existing_entry_is_refused(repo: Path, tmp_path: Path) -> None:
    run = save_run(tmp_path / "run", make_generator("vae"), None)
    with pytest.raises(ConfigError, match="--triton .*already exists"):
        export_model(ExportConfig(source=str(run), out=tmp_path / "out", triton=repo, triton_name="no-eyeglasses-v2"))
    assert not (tmp_path / "out").exists()
    manifest = json.loads((repo / "no-eyeglasses-v2" / "manifest.json").read_text())
    assert manifest["guard"]["mode"] == "shift"  # untouched
