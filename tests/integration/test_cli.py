"""The CLI as a user meets it: tiny pretrain runs, zoo listing, collection, evaluation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.unlearn.zoo import load_classifier, load_generator

runner = CliRunner()


@pytest.mark.slow
def test_pretrain_tiny_generator_writes_weights_grid_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "gan"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            "mnist",
            "--model",
            "dcgan",
            "--epochs",
            "2",
            "--select-last",
            "2",
            "--limit",
            "256",
            "--eval-samples",
            "200",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "model.json", "samples.png", "metrics.json", "options.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auditor"] == "mnist-auditor" and metrics["fid_heldout"] > 0
    assert abs(sum(v for k, v in metrics["generated_rates"].items() if k.startswith("digit=")) - 1) < 1e-4
    assert load_generator(out).z_dim == 32
    chosen = metrics["snapshot"]  # the labeller scored both epochs and the lower gap was kept
    assert chosen["selected_by"] == "mnist-labeller" and set(chosen["gaps"]) == {"1", "2"}
    assert chosen["rate_gap"] == min(chosen["gaps"].values()) == chosen["gaps"][str(chosen["epoch"])]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dcgan", "vae"])
def test_pretrain_with_the_labellers_term_trains_and_records_its_weight(tmp_path: Path, model: str) -> None:
    out = tmp_path / model
    args = ["--dataset", "mnist", "--model", model, "--epochs", "1", "--limit", "256", "--attr-weight", "0.5"]
    result = runner.invoke(app, ["pretrain", *args, "--eval-samples", "200", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["train_args"]["attr_weight"] == 0.5  # the run says how it was trained
    assert load_generator(out).z_dim > 0 and (out / "metrics.json").is_file()


@pytest.mark.slow
def test_pretrain_tiny_classifier_reports_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "clf"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            "mnist",
            "--model",
            "labeller",
            "--epochs",
            "2",
            "--limit",
            "1000",
            "--width",
            "8",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    acc = json.loads((out / "metrics.json").read_text())["heldout_accuracy"]
    assert acc["digit"] > 0.3  # two epochs on 900 digits already beat chance (0.1) by far
    clf = load_classifier(out)
    assert set(clf.cfg.heads) == {"digit", "eight", "thick"} and clf.cfg.width == 8  # --width rebuilt from the sidecar


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(  # loads the dataset to name its attributes: about 8 s on mnist
            ["--dataset", "mnist", "--model", "vae", "--exclude", "glasses"],
            "--exclude 'glasses'",
            marks=pytest.mark.slow,
        ),
        (["--recipe", "mnist-stylegan"], "--recipe 'mnist-stylegan'"),
        (["--dataset", "cifar", "--model", "vae"], "--dataset"),
        (["--model", "vae"], "--recipe NAME"),
        (["--recipe", "mnist-vae", "--select-last", "1"], "--select-last 1: snapshot selection is for the dcgan"),
        (["--recipe", "mnist-dcgan", "--select-last", "2"], "--select-last 2: more than the 1 epochs"),
        (["--dataset", "folder:/no/such", "--model", "dcgan", "--select-last", "1"], "needs the zoo labeller"),
        (["--recipe", "mnist-dcgan", "--pack", "3"], "--pack 3: the batch of 64 does not split"),
        (["--recipe", "mnist-vae", "--pack", "2"], "--pack 2: packing is for the dcgan"),
        (["--recipe", "mnist-dcgan", "--d-norm", "layer"], "--d-norm 'layer': choose from batch, none, spectral"),
        (["--recipe", "mnist-vae", "--d-norm", "none"], "--d-norm none: the dcgan's discriminator option"),
        (["--recipe", "mnist-labeller", "--attr-weight", "1"], "--attr-weight 1.0: the labeller's term trains a vae"),
        (["--dataset", "folder:/no/such", "--model", "vae", "--attr-weight", "2"], "needs the zoo labeller"),
        (["--recipe", "mnist-dcgan", "--attr-weight", "-1"], "--attr-weight"),
        (["--recipe", "mnist-vae", "--r1", "1"], "--r1 1.0: the penalty is on the dcgan's discriminator"),
        (["--recipe", "mnist-dcgan", "--r1", "-1"], "--r1"),
        (["--recipe", "mnist-vae", "--ema", "0.99"], "--ema 0.99: the weight average is the dcgan generator's"),
        (["--recipe", "mnist-dcgan", "--ema", "1"], "--ema 1.0: a decay is in [0, 1)"),
        (["--recipe", "mnist-dcgan", "--ema", "-0.5"], "--ema"),
    ],
)
def test_pretrain_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["pretrain", *args, "--out", str(tmp_path / "o"), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_zoo_lists_shipped_entries_as_json() -> None:
    result = runner.invoke(app, ["zoo", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["mnist-labeller"]["metrics"]["heldout_accuracy"]["digit"] > 0.97
    assert runner.invoke(app, ["zoo"]).exit_code == 0


def test_missing_or_corrupt_checkpoint_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    for target in (str(tmp_path), str(tmp_path / "nothing.safetensors"), "faces-stylegan"):
        result = runner.invoke(app, ["collect", "--model", target, "--out", str(tmp_path / "c"), "--n", "10"])
        assert result.exit_code == 2, (target, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_collect_with_a_person_s_labels(tmp_path: Path) -> None:
    sheets = tmp_path / "sheets"
    result = runner.invoke(app, ["collect", "--model", "mnist-vae", "--sheet", "--n", "150", "--out", str(sheets)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in sheets.glob("sheet-*.png")) == ["sheet-000.png", "sheet-001.png"]
    (sheets / "positives.txt").write_text("1 5, 149\n")
    result = runner.invoke(
        app, ["collect", "--model", "mnist-vae", "--labels", str(sheets / "positives.txt"), "--out", str(sheets)]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((sheets / "collect.json").read_text())
    assert stats["n"] == 150 and stats["positive_rate"]["thick"] == pytest.approx(3 / 150)
    (sheets / "positives.txt").write_text("1 150\n")
    result = runner.invoke(
        app, ["collect", "--model", "mnist-vae", "--labels", str(sheets / "positives.txt"), "--out", str(sheets)]
    )
    assert result.exit_code == 2 and "out of range" in result.output


def test_collect_with_the_labeller(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "collect",
            "--model",
            "mnist-vae",
            "--feature",
            "eight",
            "--feature",
            "thick",
            "--n",
            "300",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "collect.json").read_text())
    assert set(stats["positive_rate"]) == {"eight", "thick"} and 0 < stats["positive_rate"]["eight"] < 0.4
