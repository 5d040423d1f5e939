from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.collect import read_positive_tiles
from feature_unlearn.unlearn.device import resolve_runtime
from feature_unlearn.unlearn.errors import ConfigError, DataError, UserError
from feature_unlearn.unlearn.fit.config import FitConfig
from feature_unlearn.unlearn.fit.loop import scheduled_lr
from feature_unlearn.unlearn.fit.loss import UnlearnLoss, msssim_loss
from feature_unlearn.unlearn.fit.run import fit
from feature_unlearn.unlearn.fit.sampler import LatentPool
from feature_unlearn.unlearn.fit.state import FitState, _check_options, load_state, save_state
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator


def _guard(t: float = 1.0) -> LatentGuard:
    return LatentGuard(torch.eye(8)[0], t)


def test_pool_batches_carry_the_asked_share_of_targets() -> None:
    guard = _guard(1.0)  # about 16% of N(0, I) latents are targets
    pool = LatentPool(guard, 8192, seed=0, round_index=0)
    assert 0.13 < pool.target_share < 0.19
    z, s = pool.batch(step=3, size=64, target_frac=0.5)
    assert int(s.sum()) == 32
    assert torch.equal(s, guard(z)[1])  # the flag marks exactly the target rows
    z2, s2 = pool.batch(step=3, size=64, target_frac=0.5)
    assert torch.equal(z, z2) and torch.equal(s, s2)  # a step always draws the same batch
    assert not torch.equal(z, pool.batch(step=4, size=64, target_frac=0.5)[0])


def test_pool_without_targets_is_an_error() -> None:
    with pytest.raises(DataError, match="flags no latent"):
        LatentPool(_guard(50.0), 1024, seed=0, round_index=0)


def test_msssim_accepts_32px_images_and_is_zero_for_identical_ones() -> None:
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert msssim_loss(x, x).abs().max() < 1e-4
    y = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    loss = msssim_loss(y, x)
    assert (loss > 0.05).all()
    loss.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_loss_parts_and_global_normalisation() -> None:
    torch.manual_seed(0)
    x_g, x_ref = torch.rand(8, 1, 32, 32) * 2 - 1, torch.rand(8, 1, 32, 32) * 2 - 1
    s = torch.tensor([1, 0, 1, 0, 0, 1, 0, 0], dtype=torch.bool)
    loss_fn = UnlearnLoss(alpha=2.0)
    full, parts = loss_fn(x_g, x_ref, s, 3, 5)
    l1 = (x_g - x_ref).abs().flatten(1).mean(1)
    assert parts["recon"] == pytest.approx(float(l1[~s].mean()), rel=1e-5)
    assert parts["unlearn"] == pytest.approx(float(l1[s].mean()), rel=1e-5)
    assert float(full) == pytest.approx(parts["recon"] + 2.0 * (parts["unlearn"] + parts["percep"]), rel=1e-5)
    # Two DDP-style halves normalised by the global counts add up to the full loss.
    a, _ = loss_fn(x_g[:4], x_ref[:4], s[:4], 3, 5)
    b, _ = loss_fn(x_g[4:], x_ref[4:], s[4:], 3, 5)
    assert float(a + b) == pytest.approx(float(full), rel=1e-5)


def test_checkpoint_round_trip_restores_weights_and_optimiser(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = DCGANGenerator(DCGANConfig(z_dim=4, channels=1, ngf=4)).eval()
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    g(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = FitState(
        "m", ["eyeglasses"], "abc", step=7, directions=[[1.0, 0, 0, 0]], thresholds=[0.5], row_features=["eyeglasses"]
    )
    cfg = FitConfig(out=tmp_path, model="m", features=("eyeglasses",))
    save_state(tmp_path / "checkpoint", state, g, opt, cfg)
    g2 = DCGANGenerator(DCGANConfig(z_dim=4, channels=1, ngf=4)).eval()
    opt2 = torch.optim.Adam(g2.parameters(), lr=1e-3)
    loaded = load_state(tmp_path / "checkpoint", g2, opt2, FitState("m", ["eyeglasses"], "abc"), cfg)
    assert loaded.step == 7 and loaded.thresholds == [0.5]
    for a, b in zip(g.state_dict().values(), g2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and float(s1["step"]) == float(s2["step"])
    with pytest.raises(UserError, match="features"):
        load_state(tmp_path / "checkpoint", g2, opt2, FitState("m", ["hat"], "abc"), cfg)
    with pytest.raises(UserError, match=r"--resume: .* was started with --alpha 1.0 \(now 2.0\)"):
        load_state(
            tmp_path / "checkpoint",
            g2,
            opt2,
            FitState("m", ["eyeglasses"], "abc"),
            FitConfig(**{**cfg.__dict__, "alpha": 2.0}),
        )


def test_a_run_older_than_an_option_resumes_at_that_options_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = FitConfig(out=tmp_path, model="m", features=("eyeglasses",))
    saved = {k: v for k, v in cfg.as_dict().items() if k != "robust_for"}  # the run predates --robust-for
    _check_options(saved, cfg, tmp_path)  # its default: the same run
    longer = FitConfig(**{**cfg.__dict__, "robust_for": 50})
    with pytest.raises(UserError, match=r"--robust-for 300 \(now 50\)"):
        _check_options(saved, longer, tmp_path)  # not what the run had


def test_a_run_older_than_lr_schedule_trained_at_a_constant_rate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = FitConfig(out=tmp_path, model="m", features=("eyeglasses",))
    saved = {k: v for k, v in cfg.as_dict().items() if k != "lr_schedule"}  # a stop-6 checkpoint
    with pytest.raises(UserError, match=r"--lr-schedule 'constant' \(now 'cosine'\)"):
        _check_options(saved, cfg, tmp_path)  # today's default is not what that run did
    _check_options(saved, FitConfig(**{**cfg.__dict__, "lr_schedule": "constant"}), tmp_path)


def test_a_run_older_than_guard_margin_shipped_its_guard_at_margin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = FitConfig(out=tmp_path, model="m", features=("eyeglasses",), margin=0.5)
    saved = {k: v for k, v in cfg.as_dict().items() if k != "guard_margin"}  # a stop-8 checkpoint
    with pytest.raises(UserError, match=r"--guard-margin 0.5 \(now None\)"):
        _check_options(saved, cfg, tmp_path)  # today's default chooses the margin; that run shipped --margin
    _check_options(saved, FitConfig(**{**cfg.__dict__, "guard_margin": 0.5}), tmp_path)


def test_cosine_schedule_decays_each_segment_to_near_zero() -> None:
    lrs = [scheduled_lr("cosine", 1e-3, k, 100) for k in range(100)]
    assert lrs[0] == 1e-3 and all(a > b for a, b in zip(lrs[:-1], lrs[1:], strict=True)) and 0 < lrs[-1] < 1e-6
    assert scheduled_lr("cosine", 1e-3, 50, 100) == pytest.approx(5e-4)
    assert {scheduled_lr("constant", 1e-3, k, 100) for k in range(100)} == {1e-3}


def test_unknown_lr_schedule_names_the_flag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="--lr-schedule 'step': choose from cosine, constant"):
        fit(FitConfig(out=tmp_path / "r", model="mnist-dcgan", lr_schedule="step"))
    assert not (tmp_path / "r").exists()


def test_labels_file_parsing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "pos.txt"
    f.write_text("3, 5\n7 0\n")
    assert read_positive_tiles(f, 10).tolist() == [1, 0, 0, 1, 0, 1, 0, 1, 0, 0]
    for text, msg in [
        ("3 10", "out of range"),
        ("3 3", "listed twice"),
        ("3 x", "not a tile number"),
        ("-1", "out of range"),
    ]:
        f.write_text(text)
        with pytest.raises(DataError, match=msg):
            read_positive_tiles(f, 10)


def test_precision_resolution() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(ConfigError, match="--precision"):
        resolve_runtime("cpu", "int8")
    rt = resolve_runtime("cpu", "bf16")
    with rt.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert not rt.grad_scaler().is_enabled()


class _RecordingMiner:
    """Stands in for RobustMiner: returns fixed latents and records the guard each call was given."""

    def __init__(self) -> None:
        self.guards: list[LatentGuard] = []

    def mine(self, g: torch.nn.Module, guard: LatentGuard, step: int) -> torch.Tensor:
        self.guards.append(guard)
        return torch.randn(4, 8, generator=torch.Generator().manual_seed(step))

    def targets(self, f: torch.nn.Module, guard: LatentGuard, w: torch.Tensor, step: int) -> tuple:  # type: ignore[type-arg]
        self.guards.append(guard)
        return torch.zeros_like(w), torch.ones(len(w), dtype=torch.bool)  # pull g(w) towards f(0)


def test_the_robust_term_attacks_through_the_shipped_guard_and_the_loss_keeps_the_fits() -> None:
    from feature_unlearn.unlearn.fit.distributed import Dist
    from feature_unlearn.unlearn.fit.loop import Trainer

    torch.manual_seed(0)
    f = DCGANGenerator(DCGANConfig(z_dim=8, ngf=4)).eval().requires_grad_(False)
    g = DCGANGenerator(DCGANConfig(z_dim=8, ngf=4)).eval()
    g.load_state_dict(f.state_dict())
    fit_guard = LatentGuard(torch.eye(8)[0], 0.5, mode="shift", margin=0.25)
    shipped = LatentGuard(torch.eye(8)[0], 0.5, mode="shift", margin=2.0)
    miner, rt = _RecordingMiner(), resolve_runtime("cpu")
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    trainer = Trainer(
        f,
        g,
        g,
        fit_guard,
        UnlearnLoss(1.0),
        opt,
        rt.grad_scaler(),
        rt,
        Dist(),
        miner,
        1.0,
        shipped,  # type: ignore[arg-type]
    )
    pool = LatentPool(fit_guard, 256, seed=0, round_index=0)
    parts = trainer.step(pool, 0, 8, 0.5, 1e-3)
    assert [x is shipped for x in miner.guards] == [True, True] and parts["robust"] > 0
    # the paper's term still moves a flagged latent onto t − --margin, not t − --guard-margin
    z = torch.zeros(1, 8)
    z[0, 0] = 3.0
    assert float(fit_guard.translate(z)[0, 0]) == pytest.approx(0.25)


def test_the_fit_trains_the_decoder_and_leaves_a_learned_prior_alone() -> None:
    from torch import nn

    from feature_unlearn.unlearn.fit.run import _trainable
    from feature_unlearn.unlearn.models.vae import VAEConfig, VAEDecoder

    cfg = VAEConfig(z_dim=8, channels=1, width=8, prior="flow", prior_layers=2, prior_hidden=8)
    g = VAEDecoder(cfg)
    assert g.prior is not None
    prior = {id(p) for p in g.prior.parameters()}
    params = _trainable(g, FitConfig())
    assert params and not prior & {id(p) for p in params}
    assert not any(p.requires_grad for p in g.prior.parameters())  # no gradient is even computed for it
    g2 = VAEDecoder(cfg)
    assert g2.prior is not None
    assert {id(p) for p in _trainable(g2, FitConfig(train_prior=True))} >= {id(p) for p in g2.prior.parameters()}

    class PriorOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.prior = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="no trainable parameters outside its prior"):
        _trainable(PriorOnly(), FitConfig())
