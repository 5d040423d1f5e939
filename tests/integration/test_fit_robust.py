"""``fit --robust`` on a tiny budget: the robust term is trained and recorded, and it is an option of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.unlearn.fit import FitConfig
from feature_unlearn.unlearn.fit.robust import BUFFER
from feature_unlearn.unlearn.fit.run import fit
from feature_unlearn.unlearn.io import load_checkpoint, read_run
from tests.helpers import fit_killed_at

ARGS = ["fit", "--model", "mnist-vae", "--feature", "thick", "--steps", "12", "--steps-per-round", "12"]
SMALL = ["--n-collect", "500", "--batch", "16", "--pool", "4096", "--probe", "200", "--robust-batch", "8"]
ROBUST = ["--robust", "--robust-for", "6", "--robust-steps", "3", "--robust-sample", "8"]


@pytest.mark.slow
def test_a_robust_fit_trains_the_mined_latents_and_records_it(tmp_path: Path) -> None:
    args = [*ARGS, *SMALL, *ROBUST, "--guard-margin", "1.5", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    robust = [h for h in history if "robust" in h]
    assert robust and all(h["robust"] > 0 for h in robust) and robust[0]["step"] >= 12  # the phase follows the rounds
    run = read_run(tmp_path / "r")
    assert run.options["robust"] is True and run.options["robust_for"] == 6
    assert run.metrics["steps"] == 12 + 6 and run.probes[-1]["phase"] == "robust"
    # the shipped guard (and the attacker of the phase) use --guard-margin; the fit's targets keep --margin
    assert run.guard.margin == 1.5 and run.options["margin"] == 0.25
    resumed = CliRunner().invoke(app, [*ARGS, *SMALL, "--no-robust", "--out", str(tmp_path / "r"), "--resume"])
    assert resumed.exit_code == 2 and "--robust True (now False)" in resumed.output


@pytest.mark.slow
def test_a_run_killed_in_the_robust_phase_resumes_with_its_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dict(
        model="mnist-dcgan", features=("thick",), steps=9, steps_per_round=9, goal=0.0, batch=16, n_collect=500,
        probe=200, pool=4096, checkpoint_every=3, robust=True, robust_for=8, robust_steps=3, robust_batch=8,
        robust_sample=8,
    )  # fmt: skip
    fit(FitConfig(out=tmp_path / "straight", **cfg))  # type: ignore[arg-type]
    fit_killed_at(tmp_path / "crashed", 13, monkeypatch, **cfg)
    saved = load_checkpoint(tmp_path / "crashed" / "checkpoint")
    assert saved.record.state["robust_step"] == 3 and len(saved.tensors[BUFFER]) > 0  # type: ignore[attr-defined]
    fit(FitConfig(out=tmp_path / "crashed", resume=True, **cfg))  # type: ignore[arg-type]
    a = load_checkpoint(tmp_path / "straight" / "generator").tensors
    b = load_checkpoint(tmp_path / "crashed" / "generator").tensors
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same hits, batches and steps as the uninterrupted run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mnist-vae", "--robust", "--robust-eps", "0"], "--robust-eps 0.0: the mining attack needs"),
        (
            ["--model", "tests.byo_factories:detached", "--trust-code", "--labeller", "mnist-labeller", "--feature",
             "thick", "--robust"],
            "has no gradient path from z to the image",
        ),
    ],
)  # fmt: skip
def test_robust_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["fit", "--out", str(tmp_path / "r"), "--n-collect", "500", "--steps", "2", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_attack_without_budget_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--attack", "--attack-eps", "0"])
    assert result.exit_code == 2 and "--attack-eps 0.0: the attack needs a budget above 0" in result.output
