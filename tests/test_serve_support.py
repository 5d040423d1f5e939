"""Shared fixtures and helpers for the HTTP service tests (holds no tests itself).

The artifact is a tiny guarded (shift) DCGAN exported once per session with the export tests' helpers.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_export_support import guard_entry, make_generator, save_run

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.serve.config import ServeConfig

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="session")
def serve_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    run = save_run(root / "run", make_generator("dcgan"), guard_entry(threshold=0.4))
    export_model(ExportConfig(source=str(run), out=root / "art"))
    return root / "art"


def config(artifact: Path, **overrides: Any) -> ServeConfig:
    """Small limits, one ONNX Runtime thread (trainings share the CPU)."""
    base: dict[str, Any] = {"max_batch": 16, "max_images": 16, "max_delay_ms": 5.0, "max_body_bytes": 8192, "threads": 1}
    return ServeConfig(artifact=artifact, **(base | overrides))


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


def png_array(data: bytes) -> np.ndarray:
    """A PNG as uint8 [H, W, C]."""
    a = np.asarray(Image.open(io.BytesIO(data)))
    return a[..., None] if a.ndim == 2 else a


def decode_images(body: dict[str, Any]) -> np.ndarray:
    return np.stack([png_array(base64.b64decode(s)) for s in body["images"]])
