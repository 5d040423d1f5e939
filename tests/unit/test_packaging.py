"""The install promises of pyproject.toml."""

from __future__ import annotations

import re
import sys

import pytest
from typer.testing import CliRunner

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_runtime_distribution_pulls_no_torch() -> None:
    project = tomllib.loads((ROOT / "serve" / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    assert not runtime & {"torch", "torchvision", "pytorch-msssim", "torchmetrics", "feature-unlearn", "onnx"}
    assert "onnxruntime" in runtime and "fastapi" in runtime
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch" in _names(main["optional-dependencies"]["train"])


def test_gpu_extra_does_not_mix_onnxruntime_flavours() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "onnxruntime" not in _names(extras["gpu"]) and "onnxruntime-gpu" in _names(extras["gpu"])


def test_missing_training_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from feature_unlearn import cli

    def no_torch(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr("feature_unlearn.unlearn.zoo.zoo_table", no_torch)
    result = CliRunner().invoke(cli.app, ["zoo"])
    assert result.exit_code == 2 and "feature-unlearn[train]" in result.output
