"""The VAE's learned prior: an exact invertible flow, folded into the generator, with loud failures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from feature_unlearn.cli import app
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.data.base import ImageSet
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from feature_unlearn.unlearn.io import save_checkpoint
from feature_unlearn.unlearn.models import VAEConfig, VAEDecoder, arch_dict, build_generator, check_generator
from feature_unlearn.unlearn.models.vae import U_MAX, FlowPrior
from feature_unlearn.unlearn.pretrain.common import TrainConfig
from feature_unlearn.unlearn.pretrain.vae import fit_flow, train_vae, vae_arch
from feature_unlearn.unlearn.zoo import load_generator

FLOW = VAEConfig(z_dim=6, channels=1, width=8, prior="flow", prior_layers=4, prior_hidden=16)


def _randomised(flow: FlowPrior, seed: int = 0) -> FlowPrior:
    """A flow far from the identity (its last layers start at zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    return flow.eval()


def test_flow_is_invertible_and_log_prob_is_the_change_of_variables() -> None:
    flow = _randomised(FlowPrior(4, layers=4, hidden=16))
    u = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flow = flow.double()
    z = flow(u)
    jac = torch.stack([torch.autograd.functional.jacobian(flow, ui[None])[0, :, 0] for ui in u[:8]])
    logdet = torch.linalg.slogdet(jac).logabsdet
    expected = -0.5 * (u[:8] ** 2).sum(1) - 2 * math.log(2 * math.pi) - logdet
    assert torch.allclose(flow.log_prob(z[:8]), expected, atol=1e-8)
    back = (z - flow.loc) * (-flow.log_scale).exp()
    for c in reversed(flow.couplings):
        back, _ = c.inverse(back)
    assert torch.allclose(back, u, atol=1e-10)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices: a second thread only adds contention (100x slower on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_fit_flow_matches_a_skewed_aggregate_posterior() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1024, 2, generator=gen)
    mu = torch.stack([base[:, 0] * 2 + 3, base[:, 1] + 0.8 * base[:, 0] ** 2], 1)  # banana-shaped, not Gaussian
    logvar = torch.full_like(mu, math.log(1e-4))
    flow = FlowPrior(2, layers=4, hidden=32)
    fit_flow(flow, mu, logvar, TrainConfig(prior_epochs=40), gen)
    with torch.no_grad():
        z = flow(torch.randn(4096, 2, generator=gen))
        held = torch.randn(2048, 2, generator=gen)
        fresh = torch.stack([held[:, 0] * 2 + 3, held[:, 1] + 0.8 * held[:, 0] ** 2], 1)
        gauss = torch.distributions.MultivariateNormal(mu.mean(0), torch.cov(mu.T))
        assert flow.log_prob(fresh).mean() > gauss.log_prob(fresh).mean() + 0.2  # beats the best Gaussian
    assert torch.allclose(z.mean(0), mu.mean(0), atol=0.15)
    assert torch.allclose(z.std(0), mu.std(0), rtol=0.15)  # the banana's long tail makes std noisy


def test_generator_with_flow_obeys_the_contract_and_is_deterministic() -> None:
    g = VAEDecoder(FLOW).eval()
    _randomised(g.prior)  # type: ignore[arg-type]
    assert check_generator(g) == (1, 32, 32) and g.z_dim == 6
    z = torch.randn(5, 6)
    assert torch.equal(g(z), g(z))
    assert torch.allclose(g(z), g.decode(g.prior(z)))  # type: ignore[misc]
    far = z * 1000  # absurd latents: the flow reads them clipped, so every runtime agrees
    assert torch.equal(g(far), g(far.clamp(-U_MAX, U_MAX))) and torch.isfinite(g(far)).all()
    assert any(k.startswith("prior.couplings.") for k in g.state_dict())
    assert not any(k.endswith(".mask") for k in g.state_dict())  # masks are rebuilt from the config


def test_old_sidecars_without_a_prior_still_build() -> None:
    old = {"z_dim": 8, "channels": 1, "width": 8, "resolution": 32, "kind": "vae"}
    g = build_generator(old)
    assert isinstance(g, VAEDecoder) and g.prior is None
    assert arch_dict(g.cfg)["prior"] == "none"


def test_unknown_prior_kind_is_one_line_naming_the_field() -> None:
    with pytest.raises(CheckpointError, match=r"arch.prior 'gmm'") as err:
        build_generator({**arch_dict(FLOW), "prior": "gmm"}, "x.json")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="prior 'gmm'"):
        vae_arch(TrainConfig(prior="gmm"), 1)


def test_pretrain_cli_refuses_an_unknown_prior(tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["pretrain", "--recipe", "mnist-vae", "--prior", "gmm", "--out", str(out)])
    assert result.exit_code == 2 and "--prior 'gmm'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def _save(stem: Path, g: nn.Module, arch: VAEConfig) -> None:
    record = ModelRecord(kind="generator", arch=arch_dict(arch), dataset="mnist")
    save_checkpoint(stem, g.state_dict(), record)


@pytest.mark.parametrize("weights, sidecar", [(FLOW, dataclasses.replace(FLOW, prior="none")), (None, FLOW)])
def test_weights_that_do_not_fit_the_sidecar_prior_are_one_line(
    tmp_path: Path, weights: VAEConfig | None, sidecar: VAEConfig
) -> None:
    g = VAEDecoder(weights or dataclasses.replace(FLOW, prior="none", prior_layers=0, prior_hidden=0))
    _save(tmp_path / "g", g, sidecar)
    with pytest.raises(CheckpointError, match="does not fit its architecture") as err:
        load_generator(tmp_path / "g.safetensors")
    assert "\n" not in str(err.value)


def test_flow_generator_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    g = VAEDecoder(FLOW).eval()
    _randomised(g.prior)  # type: ignore[arg-type]
    _save(tmp_path / "g", g, FLOW)
    back = load_generator(tmp_path / "g.json")
    z = torch.randn(4, 6)
    assert torch.equal(back(z), g(z))


@pytest.mark.usefixtures("one_thread")
def test_train_vae_fits_the_prior_on_its_posterior() -> None:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 1, 32, 32, generator=gen) > 0.7).float() * 2 - 1
    data = ImageSet("toy", images, {}, {})
    cfg = TrainConfig(epochs=1, batch=32, lr=1e-3, width=8, z_dim=4, sigma=0.2, prior="flow")
    cfg = dataclasses.replace(cfg, prior_layers=2, prior_hidden=8, prior_epochs=2)
    seen: list[int] = []
    g = train_vae(data, cfg, lambda epoch, _g: seen.append(epoch))
    assert g.cfg.prior == "flow" and g.prior is not None and seen == [0]  # the last grid waits for the prior
    assert not torch.equal(g.prior.loc, torch.zeros(4))  # started at the posterior mean
    assert check_generator(g) == (1, 32, 32)


@pytest.mark.slow
def test_flow_generator_exports_to_onnx_and_matches_pytorch(tmp_path: Path) -> None:
    """The prior travels inside the generator's graph (no data-dependent branch), at any batch."""
    import numpy as np
    import onnxruntime as ort

    from feature_unlearn.export import ExportConfig, export_model
    from feature_unlearn.unlearn.images import to_uint8

    g = VAEDecoder(FLOW).eval()
    _randomised(g.prior)  # type: ignore[arg-type]
    _save(tmp_path / "g", g, FLOW)
    export_model(ExportConfig(source=str(tmp_path / "g.safetensors"), out=tmp_path / "onnx"))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        z = np.random.default_rng(batch).standard_normal((batch, 6), dtype=np.float32)
        image = session.run(None, {"z": z})[0]
        with torch.no_grad():
            ref = to_uint8(g(torch.from_numpy(z))).numpy()
        assert image.shape == ref.shape and np.abs(image.astype(int) - ref.astype(int)).max() <= 1


def test_edge_term_charges_blur_but_not_a_uniform_offset() -> None:
    from feature_unlearn.unlearn.data.augment import blur
    from feature_unlearn.unlearn.pretrain.vae import vae_loss

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mu, logvar = torch.zeros(4, 2), torch.zeros(4, 2)
    plain, edged = TrainConfig(sigma=0.1), TrainConfig(sigma=0.1, edge=1.0)
    offset, blurred = x + 0.05, blur(x, torch.full((4,), 1.0))
    assert torch.allclose(vae_loss(x, offset, mu, logvar, edged)[0], vae_loss(x, offset, mu, logvar, plain)[0])
    assert vae_loss(x, blurred, mu, logvar, edged)[0] > 1.5 * vae_loss(x, blurred, mu, logvar, plain)[0]
