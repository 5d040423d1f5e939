"""``pretrain --measure-only``: re-grade a trained generator with today's classifiers, weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.models import VAEConfig, VAEDecoder, arch_dict
from feature_unlearn.unlearn.zoo import load_generator

pytestmark = pytest.mark.slow  # loads MNIST and both zoo classifiers

ARCH = VAEConfig(z_dim=16, channels=1, width=8, prior="flow", prior_layers=2, prior_hidden=8)


def _trained(out: Path) -> VAEDecoder:
    torch.manual_seed(0)
    g = VAEDecoder(ARCH).eval()
    record = ModelRecord(
        kind="generator", arch=arch_dict(ARCH), dataset="mnist", role="vae", metrics={"train_seconds": 12.5}
    )
    out.mkdir(parents=True)
    save_checkpoint(out / "model", g.state_dict(), record)
    return g


def test_measure_only_rewrites_the_metrics_and_keeps_the_weights(tmp_path: Path) -> None:
    g = _trained(tmp_path / "r")
    args = [
        "pretrain",
        "--recipe",
        "mnist-vae",
        "--out",
        str(tmp_path / "r"),
        "--measure-only",
        "--eval-samples",
        "200",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "r" / "model.json").read_text())
    m = sidecar["metrics"]
    assert m["train_seconds"] == 12.5 and m["samples"] == 200 and m["labeller"] == "mnist-labeller"
    assert set(m["labeller_auditor_agreement"]) == {"eight", "thick"}
    assert all(0.0 <= v <= 1.0 for v in m["labeller_auditor_agreement"].values())
    assert set(m["labeller_rates"]) >= {"eight", "thick"}
    z = torch.randn(3, 16)
    assert torch.equal(load_generator(tmp_path / "r" / "model.json")(z), g(z))  # sealed record and sha256 agree


def test_measure_only_refuses_a_checkpoint_of_another_dataset(tmp_path: Path) -> None:
    _trained(tmp_path / "r")
    args = [
        "pretrain",
        "--recipe",
        "faces-vae",
        "--out",
        str(tmp_path / "r"),
        "--measure-only",
        "--eval-samples",
        "200",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "trained on mnist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_width_overrides_the_recipe_and_only_when_given(tmp_path: Path) -> None:
    from feature_unlearn.unlearn.pretrain.request import PretrainRequest

    shipped = PretrainRequest(out=tmp_path, recipe="faces-auditor").resolve().train
    assert (shipped.width, shipped.epochs) == (16, 12)  # the zoo's auditor: 12 epochs at width 16 (README)
    wider = PretrainRequest(out=tmp_path, recipe="faces-auditor", width=32).resolve().train
    assert (wider.width, wider.epochs) == (32, 12)
