"""The wheels as pip builds them: one top-level name, and a slim runtime distribution that imports no torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    """Build ``source``'s wheel into ``out``; setuptools' build/ and egg-info scratch is removed again."""
    before = {*source.glob("*.egg-info"), *source.glob("build")}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    code = (
        "import sys, feature_unlearn.serve.http\n"
        "assert 'torch' not in sys.modules\n"
        "print(feature_unlearn.serve.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(str(unpacked)), proc.stdout  # the wheel's copy, not the checkout
