"""A 64x64 DCGAN and VAE of ours through the Python export API and the torch-free runtime (issue 13, item 3).

Export validation, the manifest, the Triton config and the runtime take H, W and C from the model.
A random-initialised generator draws nearly the same image for every latent; its BatchNorm
statistics are set from 256 prior draws, as training would, so that the guard's shift shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.export.module import build_module
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn.artifacts import GuardRecord
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator, VAEConfig, VAEDecoder
from tests.helpers import guard_entry, save_run

pytestmark = pytest.mark.slow  # an export of its own (about 2 s each)


def calibrated(kind: str, resolution: int, z_dim: int = 8, channels: int = 3) -> nn.Module:
    torch.manual_seed(resolution)
    g = (
        DCGANGenerator(DCGANConfig(z_dim=z_dim, channels=channels, ngf=8, resolution=resolution))
        if kind == "dcgan"
        else VAEDecoder(VAEConfig(z_dim, channels, 8, resolution, prior="flow", prior_layers=2, prior_hidden=16))
    )
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        g.train()(torch.randn(256, z_dim))
    return g.eval()


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_a_64px_generator_of_ours_exports_validates_and_serves_at_64(tmp_path: Path, kind: str) -> None:
    g, guard = calibrated(kind, 64), guard_entry()
    run = save_run(tmp_path / "run", g, guard)
    export_model(ExportConfig(source=str(run), out=tmp_path / "art", triton=tmp_path / "triton"))
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert (manifest["image"]["height"], manifest["image"]["width"], manifest["image"]["channels"]) == (64, 64, 3)
    cases = manifest["info"]["validation"]["cases"]
    assert cases and all(c["image_max"] <= 1 for c in cases.values())  # ONNX Runtime vs PyTorch, grey levels
    (config,) = (tmp_path / "triton").rglob("config.pbtxt")
    assert "dims: [ 64, 64, 3 ]" in config.read_text()

    gen = SafeGenerator.load(tmp_path / "art", threads=1)
    z = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32) * 1.5
    out = gen.generate(z=z)
    assert out.images.shape == (6, 64, 64, 3) and out.images.dtype == np.uint8
    rows, thresholds = tuple(map(tuple, guard["direction"])), tuple(guard["threshold"])
    vector = GuardRecord(direction=rows, threshold=thresholds, features=tuple(guard["features"]))
    with torch.no_grad():
        image, flagged, _ = build_module(g, vector, "shift")(torch.from_numpy(z))
    diff = np.abs(out.images.astype(int) - image.numpy().astype(int))
    assert diff.max() <= 1 and np.array_equal(out.flagged, flagged.numpy())
    assert out.images.std(axis=0).mean() > 5  # the latents draw different images: the comparison means something
