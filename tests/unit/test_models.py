from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint
from feature_unlearn.unlearn.models import (
    AttributeClassifier,
    ClassifierConfig,
    DCGANConfig,
    DCGANDiscriminator,
    DCGANGenerator,
    VAEConfig,
    VAEDecoder,
    arch_dict,
    build_generator,
    check_generator,
    load_factory,
)
from feature_unlearn.unlearn.zoo import load_classifier, load_generator

GENERATORS = [
    VAEDecoder(VAEConfig(z_dim=8, channels=1, width=8)),
    DCGANGenerator(DCGANConfig(z_dim=8, channels=3, ngf=8, ndf=8)),
]


@pytest.mark.parametrize("g", GENERATORS, ids=["vae", "dcgan"])
def test_generator_contract(g: torch.nn.Module) -> None:
    g.eval()
    c, h, w = check_generator(g)
    assert (h, w) == (32, 32) and c == g.cfg.channels
    x = g(torch.randn(5, g.z_dim) * 10)  # even far from the prior, images stay in range
    assert x.shape == (5, c, 32, 32) and x.abs().max() <= 1.0
    with pytest.raises(AssertionError, match="z must be"):
        g(torch.randn(5, g.z_dim + 1))


@pytest.mark.parametrize("g", GENERATORS, ids=["vae", "dcgan"])
def test_generator_checkpoint_round_trip(g: torch.nn.Module, tmp_path) -> None:  # type: ignore[no-untyped-def]
    g.eval()
    save_checkpoint(tmp_path / "model", g.state_dict(), ModelRecord(kind="generator", arch=arch_dict(g.cfg)))
    loaded = load_generator(tmp_path)
    z = torch.randn(4, g.z_dim)
    assert torch.equal(loaded(z), g(z))
    assert not (tmp_path / "model.safetensors").read_bytes().startswith(b"\x80")  # not a pickle


def test_packed_discriminator_judges_images_together() -> None:
    cfg = DCGANConfig(z_dim=8, channels=3, ngf=8, ndf=8)
    torch.manual_seed(0)
    d = DCGANDiscriminator(cfg, pack=2).eval()
    x = torch.randn(6, 3, 32, 32)
    assert d(x).shape == (3,)  # one logit per pair
    swapped = x.clone()
    swapped[2:4] = x[[3, 2]]  # the order inside a pack matters, the other packs do not move
    out, out_swapped = d(x), d(swapped)
    assert torch.equal(out[[0, 2]], out_swapped[[0, 2]]) and not torch.equal(out[1], out_swapped[1])
    with pytest.raises(AssertionError, match="packs of 2"):
        d(x[:5])
    with pytest.raises(ConfigError, match="pack 0"):
        DCGANDiscriminator(cfg, pack=0)


@pytest.mark.parametrize("norm", ["batch", "none", "spectral"])
def test_discriminator_norm_decides_whether_batch_mates_move_a_logit(norm: str) -> None:
    """BatchNorm judges an image against its batch (so a batch's feature frequency is normalised away);
    ``none`` and ``spectral`` judge each image alone."""
    cfg = DCGANConfig(z_dim=8, channels=3, ngf=8, ndf=8)
    torch.manual_seed(0)
    d = DCGANDiscriminator(cfg, norm=norm).train()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        d(x)  # one training-mode call first: spectral norm's power iteration settles its vectors
        if norm == "spectral":
            d.eval()  # then frozen, so two calls see the same weight
        alone, in_batch = d(x[:2]), d(torch.cat([x[:2], 3 * x[2:]]))[:2]
    assert torch.allclose(alone, in_batch, atol=1e-6) == (norm != "batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == (norm == "batch")
    spectral = [m for m in d.modules() if torch.nn.utils.parametrize.is_parametrized(m)]
    assert len(spectral) == (4 if norm == "spectral" else 0)  # every conv, the logit's too
    if norm == "spectral":
        top = torch.linalg.matrix_norm(spectral[1].weight.detach().flatten(1), ord=2)
        assert abs(float(top) - 1.0) < 0.05


def test_discriminator_refuses_an_unknown_norm() -> None:
    with pytest.raises(ConfigError, match="d_norm 'layer': choose from batch, none, spectral"):
        DCGANDiscriminator(DCGANConfig(), norm="layer")


def test_classifier_heads_and_predict() -> None:
    clf = AttributeClassifier(
        ClassifierConfig(kind="resnet", channels=1, heads={"digit": 10, "thick": 2}, width=8)
    ).eval()
    out = clf(torch.randn(3, 1, 32, 32))
    assert out["digit"].shape == (3, 10) and out["thick"].shape == (3,)
    pred = clf.predict(torch.randn(7, 1, 32, 32), batch=3)
    assert pred["digit"].shape == (7,) and set(pred["thick"].tolist()) <= {0, 1}


def test_tampered_weights_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = GENERATORS[0]
    save_checkpoint(tmp_path / "model", g.state_dict(), ModelRecord(kind="generator", arch=arch_dict(g.cfg)))
    blob = bytearray((tmp_path / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(tmp_path / "model")


def test_corrupt_sidecar_and_wrong_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = GENERATORS[1]
    save_checkpoint(tmp_path / "model", g.state_dict(), ModelRecord(kind="generator", arch=arch_dict(g.cfg)))
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(tmp_path / "model.json")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_generator(tmp_path)


def test_architecture_mismatch_is_a_checkpoint_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = GENERATORS[1]
    record = ModelRecord(kind="generator", arch={**arch_dict(g.cfg), "ngf": 16})
    save_checkpoint(tmp_path / "model", g.state_dict(), record)
    with pytest.raises(CheckpointError, match="does not fit its architecture"):
        load_generator(tmp_path)


def test_unknown_zoo_name() -> None:
    with pytest.raises(CheckpointError, match="unknown zoo name"):
        load_generator("celeba-stylegan")


def test_plugin_generator_via_module_factory(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mygen.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        class Tiny(nn.Module):
            def __init__(self, z_dim=4):
                super().__init__()
                self.z_dim = z_dim
                self.fc = nn.Linear(z_dim, 3 * 32 * 32)
            def forward(self, z):
                return torch.tanh(self.fc(z)).view(-1, 3, 32, 32)
        def make(z_dim=4):
            return Tiny(z_dim)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    arch = {"kind": "factory", "factory": "mygen:make", "kwargs": {"z_dim": 6}}
    with pytest.raises(CheckpointError, match="--trust-code"):
        build_generator(arch)
    assert "mygen" not in sys.modules  # refused before importing anything
    g = build_generator(arch, trust_code=True)
    assert g.z_dim == 6 and check_generator(g) == (3, 32, 32)
    save_checkpoint(tmp_path / "ck", g.state_dict(), ModelRecord(kind="generator", arch=arch))
    with pytest.raises(CheckpointError, match="mygen:make.*--trust-code"):
        load_generator(tmp_path / "ck.safetensors")
    assert load_generator(tmp_path / "ck.safetensors", trust_code=True).z_dim == 6
    sys.modules.pop("mygen", None)


@pytest.mark.parametrize(
    "spec, msg",
    [("nomodule_xyz:make", "cannot import"), ("json:nope", "no callable"), ("justtext", "expected the form")],
)
def test_plugin_errors_name_the_flag(spec: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load_factory(spec, {})


def test_atomic_writes_keep_the_usual_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    from feature_unlearn.unlearn.io import write_json

    path = write_json(tmp_path / "x.json", {"a": 1})
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
