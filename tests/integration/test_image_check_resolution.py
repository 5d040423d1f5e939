"""The image check above 64x64 (issue 13, item 3): it average-pools the image to 64 pixels a side first.

Distillation keeps its training images pooled (at 256x256 the default 24,576 images would take
19 GB at full size), labels them at full size, and the pooled check ships in the export's graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn import imagecheck
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.guard import guard_from_record
from feature_unlearn.unlearn.imagecheck import DistilConfig, distil, load_image_check, pool_for, save_image_check
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.metrics import generate, latents
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator, arch_dict
from feature_unlearn.unlearn.zoo import load_generator_with_meta
from tests.helpers import guard_entry

pytestmark = pytest.mark.slow  # a distillation and an export of their own (about 10 s)

TINY = DistilConfig(n=384, heldout=256, epochs=4, batch=32, adversarial=16, adversarial_steps=2, rounds=2)


class Brightness(nn.Module):
    """A detector of bright images (the brightest fifth of g's): what the check must learn, through its pooling."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        means = generate(g, latents(1024, 8, 1)).mean(dim=(1, 2, 3))
        self.level, self.scale = float(means.quantile(0.8)), float(means.std())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"bright": 4.0 * (x.mean(dim=(1, 2, 3)) - self.level) / self.scale}


def generator(resolution: int) -> nn.Module:
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(z_dim=8, channels=1, ngf=4, resolution=resolution))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        g.train()(torch.randn(256, 8))
    return g.eval()


def test_pooling_factor() -> None:
    assert [pool_for(h) for h in (16, 32, 64, 128, 256)] == [1, 1, 1, 2, 4]


def test_a_128px_check_is_distilled_on_pooled_images_and_ships_in_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g, run = generator(128), tmp_path / "run"
    meta = {"kind": "generator", "arch": arch_dict(g.cfg), "dataset": "mnist", "features": ["bright"]}
    meta |= {"guard": guard_entry(threshold=1.0) | {"features": ["bright"]}, "base_model": "mnist-dcgan"}
    record = ModelRecord.from_dict(meta | {"base_sha256": "0" * 64}, str(run))
    save_checkpoint(run / "generator", g.state_dict(), record)  # a fit run that removed "bright"
    g, meta = load_generator_with_meta(run)
    assert meta.record.guard is not None
    guard = guard_from_record(meta.record.guard)
    trained_on: list[tuple[int, ...]] = []
    train = imagecheck._train
    monkeypatch.setattr(imagecheck, "_train", lambda x, *a: trained_on.append(tuple(x.shape)) or train(x, *a))
    detector = Brightness(g)
    check, figures = distil(g, g, guard, detector, ("bright",), TINY)  # type: ignore[arg-type]
    (first, second) = trained_on  # round 2 adds the 16 images its adaptive search found
    assert check.cfg.pool == 2 and first[1:] == second[1:] == (1, 64, 64) and second[0] == first[0] + 16
    assert figures["train_images"] == second[0] and figures["recall"] >= 0.9

    x = generate(g, latents(512, 8, 7))
    score = check(x)[1].numpy()
    bright = detector(x)["bright"].numpy()
    rank = np.corrcoef(np.argsort(np.argsort(score)), np.argsort(np.argsort(bright)))[0, 1]
    assert rank > 0.8, rank  # it learned the labeller's feature from the pooled images

    save_image_check(tmp_path / "run" / "image_check", check, figures | {"generator_sha256": meta.sha256})
    assert load_image_check(tmp_path / "run" / "image_check")[0].cfg.pool == 2
    export_model(ExportConfig(source=str(run), out=tmp_path / "art", image_check=True))  # validated against PyTorch
    gen = SafeGenerator.load(tmp_path / "art", threads=1, on_flagged="blank")
    z = latents(32, 8, 9).numpy()
    out = gen.generate(z=z)
    assert gen.has_image_check and out.images.shape == (32, 128, 128, 1) and out.image_scores is not None
    with torch.no_grad():
        expected = check(g(guard.translate(torch.from_numpy(z))))[1].numpy()
    np.testing.assert_allclose(out.image_scores, expected, rtol=1e-3, atol=1e-2)
