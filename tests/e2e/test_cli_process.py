"""The CLI as a separate process: the one-line errors a shell user sees, and no code run from a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint


@pytest.mark.slow
def test_a_sidecar_naming_code_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arch = {"kind": "plugin", "factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    save_checkpoint(tmp_path / "generator", {}, ModelRecord(kind="generator", arch=arch))
    result = subprocess.run(
        [sys.executable, "-m", "feature_unlearn.cli", "export", str(tmp_path), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--trust-code" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
