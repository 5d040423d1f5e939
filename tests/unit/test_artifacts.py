"""Artifacts are data: sealed records, refused versions, no code from a file, edits detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from feature_unlearn.unlearn.artifacts import GuardRecord, ModelRecord
from feature_unlearn.unlearn.errors import CheckpointError
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator, arch_dict
from feature_unlearn.unlearn.zoo import load_generator, load_generator_with_meta

G = DCGANGenerator(DCGANConfig(z_dim=8, channels=1, ngf=8, ndf=8)).eval()
GUARD = GuardRecord(direction=((1.0,) + (0.0,) * 7,), threshold=(0.5,), features=("thick",))


def _run(tmp_path: Path) -> Path:
    record = ModelRecord(
        kind="generator",
        arch=arch_dict(G.cfg),
        base_model="mnist-dcgan",
        base_sha256="0" * 64,
        features=("thick",),
        alpha=1.0,
        guard=GUARD,
    )
    save_checkpoint(tmp_path / "generator", G.state_dict(), record)
    return tmp_path


def _edit(path: Path, **changes: object) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_the_guard_is_sealed_with_the_weights(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _, meta = load_generator_with_meta(run)
    assert meta.record.guard == GUARD
    guard = json.loads((run / "generator.json").read_text())["guard"]
    _edit(run / "generator.json", guard={**guard, "threshold": [1e30]})  # switch the guard off by hand
    with pytest.raises(CheckpointError, match=r"\['guard'\] differ from the record sealed in generator.safetensors"):
        load_generator(run)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 1}, "format_version 1 is not one this version reads"),
        ({"format_version": 3}, "format_version 3 is not one this version reads"),
        ({"colour": "blue"}, "differ from the record sealed"),
    ],
)
def test_unknown_versions_and_edits_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    run = _run(tmp_path)
    _edit(run / "generator.json", **change)
    with pytest.raises(CheckpointError, match=message):
        load_generator(run)


def test_a_record_with_unknown_fields_or_wrong_types_is_refused() -> None:
    good = ModelRecord(kind="generator", arch=arch_dict(G.cfg)).as_json()
    with pytest.raises(CheckpointError, match=r"unknown field\(s\) \['colour'\]"):
        ModelRecord.from_dict({**good, "colour": "blue"}, "x.json")
    with pytest.raises(CheckpointError, match="alpha: expected a finite number"):
        ModelRecord.from_dict({**good, "alpha": "1"}, "x.json")
    with pytest.raises(CheckpointError, match="guard has 1 directions and 2 thresholds"):
        GuardRecord.from_dict({"direction": [[1.0, 0.0]], "threshold": [0.1, 0.2], "features": ["a"]}, "x.json")


def test_a_checkpoint_round_trips_its_record(tmp_path: Path) -> None:
    _run(tmp_path)
    ckpt = load_checkpoint(tmp_path / "generator")
    assert isinstance(ckpt.record, ModelRecord) and ckpt.record.guard == GUARD
    assert torch.equal(ckpt.tensors["net.0.weight"], G.state_dict()["net.0.weight"])
