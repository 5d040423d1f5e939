"""Bring your own generator and detector: the README's example walk (64×64, not our architectures) and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn.io import read_json

GEN = "examples.own_generator.models:generator"
DETECTOR = "examples.own_generator.models:detector"
AUDITOR = "examples.own_generator.models:auditor"
FIT = ["fit", "--model", GEN, "--trust-code", "--labeller", DETECTOR, "--feature", "eyeglasses"]
QUICK = ["--steps", "120", "--steps-per-round", "60", "--n-collect", "1500", "--probe", "500", "--pool", "4096"]
QUICK += ["--robust-for", "6", "--robust-steps", "3"]  # the default's robust phase, short


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_the_example_goes_through_fit_evaluate_export_and_serve(tmp_path: Path) -> None:
    run, art = tmp_path / "run", tmp_path / "art"
    _cli(
        "fit",
        "--model",
        GEN,
        "--trust-code",
        "--labeller",
        DETECTOR,
        "--feature",
        "eyeglasses",
        "--out",
        str(run),
        *QUICK,
    )
    assert read_json(run / "generator.json")["arch"]["factory"] == GEN  # the run records the factory
    _cli("evaluate", str(run), "--trust-code", "--auditor", AUDITOR, "--n", "2000")
    rates = json.loads((run / "evaluation.json").read_text())["models"]
    original, residual = (
        rates["original"]["target_rate"]["eyeglasses"],
        rates["unlearned+guard"]["target_rate"]["eyeglasses"],
    )
    assert original > 0.02 and residual <= 0.25 * original, (original, residual)
    _cli("export", str(run), "--out", str(art), "--trust-code")
    manifest = read_json(art / "manifest.json")
    assert manifest["image"]["height"] == 64 and manifest["image"]["channels"] == 3
    assert all(case["image_max"] <= 1 for case in manifest["info"]["validation"]["cases"].values())
    out = SafeGenerator.load(art).generate(n=8, seed=0)
    assert out.images.shape == (8, 64, 64, 3) and out.images.dtype == np.uint8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", GEN], "importing it runs its code; pass --trust-code"),
        (["--model", "no_such_pkg.mod:make", "--trust-code"], "cannot import 'no_such_pkg.mod'"),
        (["--model", "tests.byo_factories:not_a_module", "--trust-code"], "must return a torch.nn.Module, got str"),
        (["--model", "tests.byo_factories:no_z_dim", "--trust-code"], "needs an int attribute z_dim"),
        (["--model", "tests.byo_factories:tiny_images", "--trust-code"], "H, W ≥ 16, got [1, 8, 8]"),
        (["--model", "tests.byo_factories:out_of_range", "--trust-code"], "must be finite and in [-1, 1]"),
        (["--model", GEN, "--trust-code", "--labeller", DETECTOR, "--feature", "beard"], "--feature 'beard'"),
        (["--model", GEN, "--trust-code", "--feature", "eyeglasses"], "--labeller: examples.own_generator"),
        (["--model", "faces-dcgan", "--weights", "w.safetensors"], "--weights w.safetensors: only with --model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["fit", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing left behind


def test_weights_that_do_not_fit_the_module(tmp_path: Path) -> None:
    import torch

    save_file({"lin.weight": torch.zeros(3, 3)}, str(tmp_path / "w.safetensors"))
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "--out",
            str(tmp_path / "r"),
            "--model",
            GEN,
            "--trust-code",
            "--weights",
            str(tmp_path / "w.safetensors"),
        ],
    )
    assert result.exit_code == 2 and "does not fit examples.own_generator.models:generator" in result.output


def test_a_run_of_a_factory_asks_for_trust_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _cli(*FIT, "--out", str(run), "--steps", "2", "--steps-per-round", "2", "--n-collect", "500", "--probe", "100")
    for cmd in (["evaluate", str(run), "--auditor", AUDITOR], ["export", str(run), "--out", str(tmp_path / "a")]):
        result = CliRunner().invoke(app, cmd)
        assert result.exit_code == 2 and "--trust-code" in result.output, result.output


def test_the_python_api_takes_the_same_factories(tmp_path: Path) -> None:
    import feature_unlearn

    metrics = feature_unlearn.fit(
        model=GEN, labeller=DETECTOR, features="eyeglasses", trust_code=True, out=str(tmp_path / "run"),
        steps=2, steps_per_round=2, n_collect=500, probe=100, robust=False,
    )  # fmt: skip
    assert metrics["steps"] == 2 and (tmp_path / "run" / "generator.safetensors").is_file()
    with pytest.raises(Exception, match="--trust-code"):
        feature_unlearn.load_generator(tmp_path / "run")


def test_the_python_api_takes_factory_functions_and_refuses_built_modules(tmp_path: Path) -> None:
    import feature_unlearn
    from examples.own_generator import models
    from feature_unlearn.unlearn.errors import ConfigError

    metrics = feature_unlearn.fit(
        generator=models.generator, labeller=models.detector, features="eyeglasses", trust_code=True,
        out=str(tmp_path / "run"), steps=2, steps_per_round=2, n_collect=500, probe=100, robust=False,
    )  # fmt: skip
    assert metrics["steps"] == 2
    record = json.loads((tmp_path / "run" / "generator.json").read_text())
    assert GEN in json.dumps(record)  # the run records how to rebuild it
    with pytest.raises(ConfigError, match="generator= got a built .*pass the function that builds it"):
        feature_unlearn.fit(generator=models.generator(), trust_code=True, out=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="not a lambda"):
        feature_unlearn.fit(generator=lambda: None, trust_code=True, out=str(tmp_path / "y"))
