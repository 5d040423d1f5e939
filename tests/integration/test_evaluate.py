from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.unlearn.attack import AttackConfig, pgd_success
from feature_unlearn.unlearn.fit import FitConfig
from feature_unlearn.unlearn.fit.run import fit
from feature_unlearn.unlearn.zoo import load_classifier, load_generator


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    fit(
        FitConfig(
            out=out,
            model="mnist-vae",
            features=("thick",),
            steps=20,
            steps_per_round=20,
            batch=32,
            n_collect=1000,
            probe=500,
            pool=4096,
            robust=False,
        )
    )
    return out


@pytest.mark.slow
def test_evaluate_writes_json_markdown_and_plot(tiny_run: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(tiny_run), "--n", "400", "--attack", "--attack-starts", "16", "--attack-steps", "3"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tiny_run / "evaluation.json").read_text())
    assert set(data["models"]) >= {"original", "original+guard", "unlearned", "unlearned+guard"}
    assert data["oracle"] == "mnist-vae-no-thick" and "oracle" in data["models"]
    for row in data["models"].values():
        assert 0 <= row["target_rate"]["thick"] <= 1 and row["fid"] > 0 and row["inception_score"] > 1
        assert row["rates"]["thick"] == row["target_rate"]["thick"] and {"eight", "digit=8"} <= set(row["rates"])
        assert row["fid_without_feature"] > 0 and row["fid_without_feature"] != row["fid"]
        assert row["fid_counterfactual"] is None  # real digits cannot be drawn again without thick strokes
    oracle = data["models"]["oracle"]  # trained without thick strokes: closer to the data without them
    assert oracle["fid_without_feature"] < oracle["fid"]
    assert (
        "| thick |" in (tiny_run / "evaluation.md").read_text()
        and "FID without the feature" in (tiny_run / "evaluation.md").read_text()
    )
    assert set(data["attribute_flips"]["all"]) == set(data["attribute_flips"]["non_target_sure"]) == {"digit", "eight"}
    for sure in data["attribute_flips"]["non_target_sure"].values():
        assert 0 < sure["share"] <= 1 and 0 <= sure["flips"] <= 1
    assert 0.9 < data["preservation"]["ms_ssim"] <= 1.0
    step = data["attribute_flips"]["random_step"]  # the reference: a random latent step of g's image change
    assert set(step["flips"]) == {"digit", "eight"} and step["radius"] > 0
    assert step["l1"] == pytest.approx(data["preservation"]["l1"], rel=0.25)
    assert "random latent step" in (tiny_run / "evaluation.md").read_text()
    suite = data["attack"]["thick"]
    assert suite["verdict"] == "labeller->auditor" and set(suite["pgd"]) == {"linf", "l2"}
    assert set(suite["pgd"]["linf"]) == {"labeller->auditor", "auditor->labeller", "auditor->auditor"}
    assert (
        set(suite["replay"])
        == set(suite["pgd"]["l2"]["labeller->auditor"])
        == {"original", "unlearned+guard", "oracle"}
    )
    assert all(0 <= v <= 1 for pair in suite["pgd"]["linf"].values() for v in pair.values())
    assert (tiny_run / "evaluation_attack.png").is_file() and "Attack suite: thick" in (
        tiny_run / "evaluation.md"
    ).read_text()
    assert (tiny_run / "evaluation.png").is_file() and "| original |" in (tiny_run / "evaluation.md").read_text()


def test_evaluate_refuses_a_zoo_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "mnist-vae", "--n", "100"])
    assert result.exit_code == 2 and "not a fit run" in result.output


@pytest.mark.slow
def test_pgd_finds_the_feature_more_often_than_random_sampling() -> None:
    f, auditor = load_generator("mnist-vae"), load_classifier("mnist-auditor")
    with torch.no_grad():
        base = float(
            (auditor(f(torch.randn(256, f.z_dim, generator=torch.Generator().manual_seed(99))))["thick"] > 0)
            .float()
            .mean()
        )
    attacked = pgd_success(f, auditor, "thick", f.z_dim, AttackConfig(eps=0.5, steps=10, starts=256))
    assert attacked > base + 0.1, (base, attacked)
