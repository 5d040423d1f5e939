"""Our own DCGAN at 64x64 through fit → export → serve (issue 13, item 3): collection, the MS-SSIM term and the
guard at 64 pixels, with a detector of the same size (a user's factory: the zoo's labellers are 32x32)."""

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
    fit += ["--n-collect", "1000", "--probe", "500", "--pool", "4096", "--threads", "1"]
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
