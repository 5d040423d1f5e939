"""The install promises of pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
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


def test_runtime_distribution_pulls_no_torch() -> None:
    project = tomllib.loads((ROOT / "serve" / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    assert not runtime & {"torch", "torchvision", "pytorch-msssim", "torchmetrics", "feature-unlearn", "onnx"}
    assert "onnxruntime" in runtime and "fastapi" in runtime
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch" in _names(main["optional-dependencies"]["train"])


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    """Build ``source``'s wheel into ``out``; setuptools' build/ and egg-info scratch is removed again."""
    before = {*source.glob("*.egg-info"), *source.glob("build")}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    for p in {*source.glob("*.egg-info"), *source.glob("build")} - before:
        shutil.rmtree(p, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_wheels_install_one_namespace_and_a_slim_runtime(tmp_path: Path) -> None:
    full = _wheel(ROOT, tmp_path / "full")
    tops = {n.split("/")[0] for n in full.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"feature_unlearn"}, tops  # no generic top-level name such as serve or export
    assert not any(n.startswith("benchmarks") or "/tests/" in n for n in full.namelist())
    runtime = _wheel(ROOT / "serve", tmp_path / "runtime")
    files = [i for i in runtime.infolist() if not i.filename.split("/")[0].endswith(".dist-info")]
    assert {f.filename.rsplit("/", 1)[0] for f in files} == {"feature_unlearn/serve"}
    assert all(f.filename.endswith(".py") for f in files)  # no weights, no pyproject
    assert sum(f.file_size for f in files) <= 1 << 20
    unpacked = tmp_path / "site"
    runtime.extractall(unpacked)
    code = "import sys, feature_unlearn.serve.http\nassert 'torch' not in sys.modules\nprint(feature_unlearn.serve.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(unpacked)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(str(unpacked)), proc.stdout  # the wheel's copy, not the checkout


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
