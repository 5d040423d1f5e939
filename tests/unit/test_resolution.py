"""Our own models at 32, 64, 128 and 256 pixels (issue 13, item 3), and what handles images of those sizes.

The 32x32 layout must stay the zoo's: every shipped model loads strictly, and each generator gives
bit for bit what the 32x32-only architecture of before (copied below) gives with the same weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.serve.png import encode_pngs
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.data import faces
from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from feature_unlearn.unlearn.fit.loss import msssim_loss
from feature_unlearn.unlearn.imagecheck import ImageCheck, ImageCheckConfig
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint
from feature_unlearn.unlearn.models import (
    RESOLUTIONS,
    VAE,
    DCGANConfig,
    DCGANDiscriminator,
    DCGANGenerator,
    VAEConfig,
    VAEDecoder,
    arch_dict,
    build_generator,
    check_generator,
)
from feature_unlearn.unlearn.pretrain.common import resolution_of
from feature_unlearn.unlearn.zoo import GENERATORS, WEIGHTS, load_classifier, load_generator, zoo_names


class OldDCGAN(nn.Module):
    """The 32x32-only DCGAN generator as it was when the zoo was trained."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        g = cfg.ngf
        self.net = nn.Sequential(
            nn.ConvTranspose2d(cfg.z_dim, 4 * g, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * g),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * g, 2 * g, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * g),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * g, g, 4, 2, 1, bias=False),
            nn.BatchNorm2d(g),
            nn.ReLU(True),
            nn.ConvTranspose2d(g, cfg.channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class OldVAEDecoder(nn.Module):
    """The 32x32-only VAE decoder (the flow prior is unchanged and reused) as it was when the zoo was trained."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.prior = VAEDecoder(cfg).prior  # FlowPrior or None: not part of this change
        w, self.w = cfg.width, cfg.width
        self.fc = nn.Linear(cfg.z_dim, 4 * w * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(4 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.BatchNorm2d(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.prior is not None:
            z = self.prior(z)
        return self.net(self.fc(z).view(z.shape[0], 4 * self.w, 4, 4))


@pytest.mark.parametrize("name", GENERATORS)
def test_every_zoo_generator_loads_and_draws_bit_identically_to_the_32px_layout(name: str) -> None:
    g = load_generator(name)  # strict load_state_dict
    stored = load_checkpoint(WEIGHTS / name).tensors
    state = g.state_dict()
    assert sorted(state) == sorted(stored)
    assert all(torch.equal(state[k], stored[k]) for k in stored)
    old = OldDCGAN(g.cfg) if isinstance(g, DCGANGenerator) else OldVAEDecoder(g.cfg)  # type: ignore[arg-type]
    old.load_state_dict(stored)  # the same names and shapes as before
    z = torch.randn(16, g.z_dim, generator=torch.Generator().manual_seed(0)) * 1.5
    with torch.no_grad():
        assert torch.equal(g(z), old.eval()(z))
    assert g.cfg.resolution == 32  # type: ignore[union-attr]


def test_every_zoo_classifier_still_loads() -> None:
    for name in zoo_names():
        if name not in GENERATORS:
            assert load_classifier(name).training is False


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_generators_discriminator_and_encoder_at_every_resolution(resolution: int) -> None:
    dc = DCGANConfig(z_dim=6, channels=3, ngf=4, ndf=4, resolution=resolution)
    vc = VAEConfig(z_dim=6, channels=1, width=4, resolution=resolution, prior="flow", prior_layers=2, prior_hidden=8)
    for g in (DCGANGenerator(dc).eval(), VAEDecoder(vc).eval()):
        c, h, w = check_generator(g)
        assert (h, w) == (resolution, resolution) and c == g.cfg.channels  # type: ignore[union-attr]
        rebuilt = build_generator(arch_dict(g.cfg))  # type: ignore[union-attr]
        rebuilt.load_state_dict(g.state_dict())  # a sidecar's arch rebuilds the same layers
    x = DCGANGenerator(dc)(torch.randn(3, 6))
    assert DCGANDiscriminator(dc)(x).shape == (3,)
    recon, mu, logvar = VAE(vc)(torch.rand(2, 1, resolution, resolution) * 2 - 1)
    assert recon.shape == (2, 1, resolution, resolution) and mu.shape == logvar.shape == (2, 6)


def test_each_doubling_adds_one_stride_2_block_with_channels_capped_at_8x() -> None:
    def convs(res: int) -> list[tuple[int, int]]:
        g = DCGANGenerator(DCGANConfig(z_dim=8, ngf=4, resolution=res))
        return [(m.in_channels, m.out_channels) for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]

    assert convs(32) == [(8, 16), (16, 8), (8, 4), (4, 1)]
    assert convs(64) == [(8, 32), (32, 16), (16, 8), (8, 4), (4, 1)]
    assert convs(256) == [(8, 32), (32, 32), (32, 32), (32, 16), (16, 8), (8, 4), (4, 1)]


@pytest.mark.parametrize("bad", [48, 512, 16, "64", True])
def test_an_unsupported_resolution_is_a_one_line_error_naming_the_field(bad: object) -> None:
    for cls in (DCGANConfig, VAEConfig):
        with pytest.raises(ConfigError, match=r"^resolution .*: not supported \(choose from 32, 64, 128, 256\)$"):
            cls(resolution=bad)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=r"^g\.json: arch\.resolution 48: not supported"):
        build_generator({"kind": "vae", "resolution": 48}, "g.json")


def test_a_checkpoint_at_an_unsupported_resolution_is_exit_2_from_the_cli(tmp_path: Path) -> None:
    g = DCGANGenerator(DCGANConfig(z_dim=4, ngf=4))
    arch = arch_dict(g.cfg) | {"resolution": 48}
    save_checkpoint(tmp_path / "model", g.state_dict(), ModelRecord(kind="generator", arch=arch, dataset="mnist"))
    result = CliRunner().invoke(app, ["collect", "--model", str(tmp_path), "--out", str(tmp_path / "c"), "--n", "10"])
    assert result.exit_code == 2 and "arch.resolution 48: not supported" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_pretraining_takes_the_resolution_from_the_data_and_refuses_other_sizes() -> None:
    def data(h: int, w: int) -> ImageSet:
        return ImageSet("folder:x", torch.zeros(2, 3, h, w), {}, {})

    assert resolution_of(data(64, 64)) == 64 and resolution_of(data(32, 32)) == 32
    for h, w in ((48, 48), (64, 32)):
        with pytest.raises(ConfigError, match=rf"^--dataset folder:x: images are {w}x{h}; the vae and dcgan take"):
            resolution_of(data(h, w))


def test_faces_render_natively_at_64_and_32_stays_the_box_filtered_drawing() -> None:
    x32, a32 = faces.render_faces(40, seed=5)
    x64, a64 = faces.render_faces(40, seed=5, resolution=64)
    assert x32.shape == (40, 3, 32, 32) and x64.shape == (40, 3, 64, 64) and x64.dtype == np.float32
    assert all(np.array_equal(a32[k], a64[k]) for k in faces.ATTRS)  # the same faces ...
    boxed = x64.reshape(40, 3, 32, 2, 32, 2).mean((3, 5))
    assert np.abs(boxed - x32).mean() < 0.04  # ... drawn once: only the pixel noise differs (sigma 0.03)
    again, _ = faces.render_faces(40, seed=5, resolution=64)
    assert np.array_equal(x64, again)
    x128, _ = faces.render_faces(4, seed=5, resolution=128)
    assert x128.shape == (4, 3, 128, 128) and 0 <= x128.min() and x128.max() <= 1
    with pytest.raises(ConfigError, match="^resolution 48: faces render at 32, 64, 128, 256$"):
        faces.render_faces(4, resolution=48)


def test_32px_faces_are_the_drawing_of_before() -> None:
    """A fixed pixel digest of the 32x32 faces (computed before the resolution option existed)."""
    x, attrs = faces.render_faces(50, seed=11)
    assert float(x.astype(np.float64).sum()) == pytest.approx(DIGEST_32, rel=1e-7)
    assert int(attrs["eyeglasses"].sum()) == GLASSES_32


def test_load_faces_caches_each_resolution_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    d64 = faces.load_faces(30, seed=2, resolution=64)
    d32 = faces.load_faces(30, seed=2)
    assert d64.shape == (3, 64, 64) and d32.shape == (3, 32, 32) and len(list(tmp_path.glob("faces-*.npz"))) == 2
    assert torch.equal(faces.load_faces(30, seed=2, resolution=64).images, d64.images)  # read back from the cache
    assert d64.images.min() >= -1 and d64.images.max() <= 1


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_msssim_loss_at_every_size_without_upsampling(resolution: int) -> None:
    gen = torch.Generator().manual_seed(resolution)
    x = torch.rand(2, 3, resolution, resolution, generator=gen) * 2 - 1
    assert msssim_loss(x, x).abs().max() < 1e-4
    y = (x + 0.5 * torch.randn(x.shape, generator=gen)).clamp(-1, 1).requires_grad_(True)
    loss = msssim_loss(y, x)
    assert loss.shape == (2,) and (loss > 0.05).all() and (loss <= 1).all()
    loss.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    small = msssim_loss((x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(-1, 1), x)
    assert (small < loss.detach()).all()  # less noise, a smaller loss


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_image_check_runs_on_every_size(resolution: int) -> None:
    check = ImageCheck(ImageCheckConfig(channels=3, features=("a", "b")), tau=0.0).eval()
    flagged, score = check(torch.rand(3, 3, resolution, resolution) * 2 - 1)
    assert flagged.shape == score.shape == (3,) and flagged.dtype == torch.bool and torch.isfinite(score).all()


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_png_round_trip_at_every_size(resolution: int) -> None:
    images = np.random.default_rng(resolution).integers(0, 256, (2, resolution, resolution, 3), dtype=np.uint8)
    for f, want in zip(encode_pngs(images), images, strict=True):
        im = Image.open(io.BytesIO(f))
        im.load()
        assert im.size == (resolution, resolution)
        np.testing.assert_array_equal(np.asarray(im), want)


DIGEST_32, GLASSES_32 = 89875.973, 11  # render_faces(50, seed=11) at commit 2779124
