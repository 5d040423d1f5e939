"""The install promises of pyproject.toml."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_runtime_install_pulls_no_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"]) | _names(project["optional-dependencies"]["runtime"])
    assert not runtime & {"torch", "torchvision", "pytorch-msssim", "torchmetrics", "feature-unlearn"}
    assert "onnxruntime" in runtime and "fastapi" in runtime
    assert "torch" in _names(project["optional-dependencies"]["train"])


def test_gpu_extra_does_not_mix_onnxruntime_flavours() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "onnxruntime" not in _names(extras["gpu"]) and "onnxruntime-gpu" in _names(extras["gpu"])


def test_missing_training_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn import cli

    def no_torch(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr("unlearn.zoo.zoo_table", no_torch)
    result = CliRunner().invoke(cli.app, ["zoo"])
    assert result.exit_code == 2 and "feature-unlearn[train]" in result.output
