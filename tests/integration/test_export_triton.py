"""Triton model repository: config.pbtxt parsed with Triton's own schema and checked against the graph."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import pytest

from feature_unlearn.export import ExportConfig, export_model, triton
from feature_unlearn.export.spec import DEFAULT_SPEC
from feature_unlearn.export.triton import config_text
from feature_unlearn.unlearn.errors import ConfigError
from tests.helpers import guard_entry, make_generator, save_run

pytestmark = pytest.mark.slow  # every test here reads a module export of a 3-channel generator with --triton

text_format = pytest.importorskip(
    "google.protobuf.text_format", reason="protobuf is not installed (pip install 'feature-unlearn[dev]')"
)


def _model_config_pb2() -> ModuleType:
    """tritonclient's generated schema, loaded by file (tritonclient.grpc's __init__ needs grpcio)."""
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
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
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


def mismatches(cfg: Any, model: onnx.ModelProto) -> list[str]:
    """How a parsed config.pbtxt's inputs and outputs differ from the ONNX graph's (names, types, per-sample dims)."""
    found: list[str] = []
    for kind, declared, graph in (("input", cfg.input, model.graph.input), ("output", cfg.output, model.graph.output)):
        if [t.name for t in declared] != [v.name for v in graph]:
            found.append(f"{kind} names {[t.name for t in declared]} != graph {[v.name for v in graph]}")
            continue
        for t, v in zip(declared, graph, strict=True):
            tt = v.type.tensor_type
            if PB2.DataType.Name(t.data_type) != _ONNX_TO_TRITON[tt.elem_type]:
                found.append(f"{t.name}: {PB2.DataType.Name(t.data_type)}, graph {_ONNX_TO_TRITON[tt.elem_type]}")
            graph_dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
            assert graph_dims[0] == "batch"  # Triton adds the batch axis itself
            per_sample = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            if per_sample != graph_dims[1:]:
                found.append(f"{t.name}: per-sample shape {per_sample}, graph {graph_dims[1:]}")
    return found


def _entry(repo: Path) -> tuple[dict[str, Any], onnx.ModelProto]:
    entry = repo / "no-eyeglasses-v2"
    return json.loads((entry / "manifest.json").read_text()), onnx.load(str(entry / "1" / "model.onnx"))


def test_config_matches_the_graph(repo: Path) -> None:
    entry = repo / "no-eyeglasses-v2"
    cfg = parse((entry / "config.pbtxt").read_text())
    model = onnx.load(str(entry / "1" / "model.onnx"))
    assert cfg.name == "no-eyeglasses-v2" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == DEFAULT_SPEC.triton_max_batch
    assert list(cfg.dynamic_batching.preferred_batch_size) == [64, 256] and cfg.instance_group[0].count == 1
    assert mismatches(cfg, model) == []


def test_plan_variant_matches_the_graph(repo: Path) -> None:
    """The TensorRT entry's config, written from the exported manifest, declares the graph's real I/O."""
    manifest, model = _entry(repo)
    cfg = parse(config_text("m-trt", manifest, DEFAULT_SPEC, plan=True))
    assert (
        cfg.platform == "tensorrt_plan" and PB2.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    )
    assert [list(o.dims) for o in cfg.output] == [[32, 32, 3], [1], [1]]
    assert mismatches(cfg, model) == []


def _channels_first(tensor: Any) -> Any:
    def wrong(t: dict[str, Any]) -> str:
        shape = t["shape"]
        return tensor({**t, "shape": [shape[0], shape[-1], *shape[1:-1]] if len(shape) == 4 else shape})

    return wrong


def _scalar_without_reshape(tensor: Any) -> Any:
    return lambda t: tensor(t).replace("\n    reshape: { shape: [ ] }", "")


@pytest.mark.parametrize(
    ("mutation", "caught"),
    [
        ("image as TYPE_FP32", "image: TYPE_FP32, graph TYPE_UINT8"),
        ("flags as TYPE_UINT8", "flagged: TYPE_UINT8, graph TYPE_BOOL"),
        ("channels first", "image: per-sample shape [3, 32, 32], graph [32, 32, 3]"),
        ("scalar without reshape", "score: per-sample shape [1], graph []"),
    ],
)
def test_a_config_text_with_a_wrong_dim_or_type_is_caught(
    repo: Path, monkeypatch: pytest.MonkeyPatch, mutation: str, caught: str
) -> None:
    """config_text made to write a wrong type or shape still parses, but no longer matches the graph: the check
    above is what catches it (the schema alone accepts any dims and types)."""
    manifest, model = _entry(repo)
    if mutation == "image as TYPE_FP32":
        monkeypatch.setitem(triton._TRITON_TYPES, "uint8", "TYPE_FP32")
    elif mutation == "flags as TYPE_UINT8":
        monkeypatch.setitem(triton._TRITON_TYPES, "bool", "TYPE_UINT8")
    elif mutation == "channels first":
        monkeypatch.setattr(triton, "_tensor", _channels_first(triton._tensor))
    else:
        monkeypatch.setattr(triton, "_tensor", _scalar_without_reshape(triton._tensor))
    for plan in (False, True):
        found = mismatches(parse(config_text("m", manifest, DEFAULT_SPEC, plan=plan)), model)
        assert caught in found, found


def test_existing_entry_is_refused(repo: Path, tmp_path: Path) -> None:
    run = save_run(tmp_path / "run", make_generator("vae"), None)
    with pytest.raises(ConfigError, match="--triton .*already exists"):
        export_model(ExportConfig(source=str(run), out=tmp_path / "out", triton=repo, triton_name="no-eyeglasses-v2"))
    assert not (tmp_path / "out").exists()
    manifest = json.loads((repo / "no-eyeglasses-v2" / "manifest.json").read_text())
    assert manifest["guard"]["mode"] == "shift"  # untouched
