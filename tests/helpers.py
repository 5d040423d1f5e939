"""Helpers shared by the test layers (plain functions, not fixtures; the fixtures live in conftest.py).

``tests`` is a package, so a test imports these as ``from tests.helpers import make_generator``.
Tiny generators saved as fit runs / zoo-like checkpoints for the export and runtime tests, the
serving tests' config and PNG decoding, and a fresh-interpreter import check.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator, VAEConfig, VAEDecoder, arch_dict

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from feature_unlearn.serve.config import ServeConfig

ROOT = Path(__file__).resolve().parents[1]  # the repository root
Z_DIM = 8
JSON = {"Content-Type": "application/json"}


# --- tiny generators and fit runs -------------------------------------------------------------


def make_generator(kind: str = "dcgan", z_dim: int = Z_DIM, channels: int = 1, seed: int = 0) -> nn.Module:
    """A tiny generator with BatchNorm statistics that spread its pixels over [-1, 1] (like a trained one)."""
    torch.manual_seed(seed)
    g = (
        DCGANGenerator(DCGANConfig(z_dim=z_dim, channels=channels, ngf=8))
        if kind == "dcgan"
        else VAEDecoder(VAEConfig(z_dim=z_dim, channels=channels, width=8))
    )
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.05, 0.3)
    return g.eval()


def fit_killed_at(out: Path, step: int, monkeypatch: Any, **cfg: Any) -> None:
    """Run a fit in ``out`` that is killed (KeyboardInterrupt) as it starts ``step``, as a user's Ctrl-C would."""
    import pytest

    from feature_unlearn.unlearn.fit import FitConfig
    from feature_unlearn.unlearn.fit import loop as fit_loop
    from feature_unlearn.unlearn.fit.run import fit

    real_step = fit_loop.Trainer.step

    def crash(self, pool, at, batch, frac, lr):  # type: ignore[no-untyped-def]
        if at == step:
            raise KeyboardInterrupt("killed")
        return real_step(self, pool, at, batch, frac, lr)

    with monkeypatch.context() as patch:
        patch.setattr(fit_loop.Trainer, "step", crash)
        with pytest.raises(KeyboardInterrupt):
            fit(FitConfig(out=out, **cfg))


def unit_rows(k: int, z_dim: int = Z_DIM, seed: int = 1) -> list[list[float]]:
    u = np.random.default_rng(seed).standard_normal((k, z_dim))
    return (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32).tolist()


def save_run(
    root: Path, generator: nn.Module, guard: Optional[dict[str, Any]], base_model: str = "mnist-dcgan"
) -> Path:
    """A fit run directory (generator.safetensors + generator.json, with a 'guard' entry when given)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = generator.cfg  # type: ignore[attr-defined]
    meta: dict[str, Any] = {"kind": "generator", "arch": arch_dict(cfg), "dataset": "mnist", "exclude": None}
    if guard is not None:
        meta.update({"guard": guard, "base_model": base_model, "base_sha256": "0" * 64})
    save_checkpoint(root / "generator", generator.state_dict(), ModelRecord.from_dict(meta, str(root)))
    return root


def guard_entry(k: int = 1, threshold: float = 0.4, z_dim: int = Z_DIM) -> dict[str, Any]:
    return {
        "direction": unit_rows(k, z_dim),
        "threshold": [threshold + 0.1 * i for i in range(k)],
        "features": [f"f{i}" for i in range(k)],
    }


def near_threshold(u: np.ndarray, t: float, n: int = 512, seed: int = 3, spread: float = 1e-6) -> np.ndarray:
    """Latents whose projection on ``u`` lies uniformly within ±``spread`` of ``t``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, u.shape[0])).astype(np.float32)
    offsets = rng.uniform(-spread, spread, n).astype(np.float32)
    return (z - ((z @ u) - (t + offsets))[:, None] * u).astype(np.float32)


# --- serving ------------------------------------------------------------------------------------


def config(artifact: Path, **overrides: Any) -> ServeConfig:
    """Small limits, one ONNX Runtime thread (trainings share the CPU)."""
    from feature_unlearn.serve.config import ServeConfig

    base: dict[str, Any] = {
        "max_batch": 16,
        "max_images": 16,
        "max_delay_ms": 5.0,
        "max_body_bytes": 8192,
        "threads": 1,
    }
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes ----------------------------------------------------------------------------------


def run_isolated(code: str, forbidden: tuple[str, ...]) -> None:
    """Run ``code`` in a fresh interpreter, then assert none of ``forbidden`` was imported."""
    check = (
        f"\nbad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r}))"
        "\nassert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code + check],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
