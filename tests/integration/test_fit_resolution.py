"""Our own DCGAN at 64x64 through fit → export → serve (issue 13, item 3): collection, the MS-SSIM term and the
guard at 64 pixels, with a detector of the same size (a user's factory: the zoo's labellers are 32x32); and
pretraining on 64x64 images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.models import DCGANGenerator, arch_dict
from feature_unlearn.unlearn.zoo import load_generator
from tests.byo_factories import calibrated_dcgan, template

pytestmark = pytest.mark.slow  # a short fit and an export (about 10 s)


def test_a_64px_dcgan_of_ours_goes_through_fit_export_and_serve(tmp_path: Path) -> None:
    g = calibrated_dcgan()
    save_checkpoint(tmp_path / "f" / "model", g.state_dict(), ModelRecord(kind="generator", arch=arch_dict(g.cfg)))
    run, art = tmp_path / "run", tmp_path / "art"
    fit = ["fit", "--model", str(tmp_path / "f"), "--labeller", "tests.byo_factories:template", "--trust-code"]
    fit += ["--feature", "template", "--out", str(run), "--steps", "60", "--steps-per-round", "60", "--batch", "16"]
    fit += ["--n-collect", "1000", "--probe", "500", "--pool", "4096", "--threads", "1", "--no-robust"]
    result = CliRunner().invoke(app, fit)
    assert result.exit_code == 0, result.output
    unlearned = load_generator(run)
    assert isinstance(unlearned, DCGANGenerator) and unlearned.cfg.resolution == 64
    probes = json.loads((run / "run.json").read_text())["probes"]
    before, after = probes[0]["rates"]["template"], probes[-1]["rates"]["template"]
    assert before > 0.05 and after < 0.5 * before, (before, after)  # the labeller's rate on g alone

    result = CliRunner().invoke(app, ["export", str(run), "--out", str(art), "--trust-code"])
    assert result.exit_code == 0, result.output
    out = SafeGenerator.load(art, threads=1).generate(n=1000, seed=3)
    assert out.images.shape == (1000, 64, 64, 3) and 0 < out.flagged.mean() < 0.5
    images = torch.from_numpy(out.images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    served = float((template()(images)["template"] > 0).float().mean())
    assert served < 0.25 * before, (served, before)  # the guarded export serves the feature a quarter as often


def _folder(root: Path, side: int, n: int) -> Path:
    from PIL import Image

    from feature_unlearn.unlearn.data.faces import render_faces

    root.mkdir()
    images, _ = render_faces(n, seed=0, resolution=side) if side in (32, 64) else (np.zeros((n, 3, side, side)), None)
    for i, x in enumerate(images):
        Image.fromarray((x.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(root / f"{i:03d}.png")
    return root


def test_pretrain_takes_the_resolution_from_the_images_and_refuses_sizes_it_lacks(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "faces64", 64, 80)  # 72 training images: one step of batch 64
    args = ["pretrain", "--dataset", f"folder:{folder}", "--model", "dcgan", "--epochs", "1", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "g"), "--eval-samples", "100"])
    assert result.exit_code == 0, result.output
    g = load_generator(tmp_path / "g")
    assert isinstance(g, DCGANGenerator) and g.cfg.resolution == 64 and g(torch.randn(2, g.z_dim)).shape[-1] == 64

    folder = _folder(tmp_path / "odd", 48, 20)
    result = CliRunner().invoke(
        app, ["pretrain", "--dataset", f"folder:{folder}", "--model", "vae", "--out", str(tmp_path / "v")]
    )
    assert (
        result.exit_code == 2
        and "images are 48x48; the vae and dcgan take square images of 32, 64, 128, 256" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "v").exists()
