"""Bad input to the export: each a typed, one-line error, and nothing half-written left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.export import (
    ExportConfig,
    ExportError,
    ExportValidationError,
    TensorRTUnavailableError,
    export_model,
)
from feature_unlearn.export import validate as validate_mod
from feature_unlearn.export.module import ExportModule, build_module
from feature_unlearn.export.onnx_export import to_onnx
from feature_unlearn.export.spec import DEFAULT_SPEC
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from tests.helpers import Z_DIM, guard_entry, make_generator, save_run


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_existing_out_is_refused_unless_force(guarded_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists.*--force"):
        export_model(ExportConfig(source=str(guarded_run), out=out))
    assert (out / "keep.txt").read_text() == "mine"
    export_model(ExportConfig(source=str(guarded_run), out=out, force=True))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert _leftovers(tmp_path) == []


def test_incomplete_run_directory(guarded_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "generator.json").write_text((guarded_run / "generator.json").read_text())  # weights missing
    with pytest.raises(CheckpointError, match="weights not found"):
        export_model(ExportConfig(source=str(broken), out=tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no generator.json"):
        export_model(ExportConfig(source=str(tmp_path / "empty"), out=tmp_path / "out"))
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_unknown_zoo_id(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown zoo name 'faces-gan'"):
        export_model(ExportConfig(source="faces-gan", out=tmp_path / "out"))


def test_guard_without_target_vector(tmp_path: Path) -> None:
    plain = save_run(tmp_path / "plain", make_generator("vae"), None)
    for mode in ("shift", "flag"):
        with pytest.raises(ConfigError, match=f"--guard {mode}: plain has no target vector"):
            export_model(ExportConfig(source=str(plain), out=tmp_path / "out", guard=mode))
    with pytest.raises(ConfigError, match="choose from shift, flag, off"):
        export_model(ExportConfig(source=str(plain), out=tmp_path / "out", guard="block"))
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_guard_entry_that_does_not_fit(tmp_path: Path) -> None:
    bad = guard_entry(z_dim=Z_DIM + 1)
    run = save_run(tmp_path / "run", make_generator("dcgan"), bad)
    with pytest.raises(CheckpointError, match=r"guard.direction rows have 9 values, the generator.s z_dim is 8"):
        export_model(ExportConfig(source=str(run), out=tmp_path / "out"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the error path is for CPU machines")
def test_tensorrt_without_gpu_is_a_clear_error(guarded_run: Path, tmp_path: Path) -> None:
    with pytest.raises(TensorRTUnavailableError, match="--tensorrt needs a CUDA GPU"):
        export_model(ExportConfig(source=str(guarded_run), out=tmp_path / "out", tensorrt=True))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_validation_failure_says_what_differs_and_writes_nothing(
    guarded_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = validate_mod.reference

    def off_by_three(module: ExportModule, z: np.ndarray) -> list[np.ndarray]:
        image, flagged, score = real(module, z)
        return [np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8), flagged, score + np.float32(0.01)]

    monkeypatch.setattr(validate_mod, "reference", off_by_three)
    with pytest.raises(ExportValidationError) as info:
        export_model(ExportConfig(source=str(guarded_run), out=tmp_path / "out", triton=tmp_path / "repo"))
    msg = str(info.value)
    assert "random-batch-1: image differs by 3 grey levels (allowed 1)" in msg and "score differs by 0.01" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no out, no Triton repo entry, no temp dirs


class DataDependent(nn.Module):
    z_dim = Z_DIM

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(z[:, :1, None, None].expand(-1, 1, 4, 4))
        return x if float(z.sum()) > 0 else -x  # a Python branch on values: not exportable


def test_unexportable_generator_is_an_export_error() -> None:
    with pytest.raises(ExportError, match="torch.onnx.export"):
        to_onnx(build_module(DataDependent(), None, "off"), DEFAULT_SPEC)


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2(guarded_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "faces-gan", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "unknown zoo name" in bad.output
    ok = runner.invoke(app, ["export", str(guarded_run), "--out", str(tmp_path / "ok"), "--guard", "flag"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["guard"] == "flag"
