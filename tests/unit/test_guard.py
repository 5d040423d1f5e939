from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.guard import GuardedGenerator, LatentGuard
from feature_unlearn.unlearn.models import DCGANConfig, DCGANGenerator


def _guard(mode: str = "shift", z_dim: int = 6, t: float = 0.5) -> LatentGuard:
    d = torch.zeros(z_dim)
    d[0], d[1] = 3.0, 4.0  # ‖z_e‖ = 5; the guard normalises
    return LatentGuard(d, t, mode)


def test_shift_lands_exactly_on_the_threshold_and_leaves_the_rest() -> None:
    g = _guard()
    z = torch.randn(1000, 6, generator=torch.Generator().manual_seed(0)) * 2
    z_out, flagged, score = g(z)
    u = torch.tensor([0.6, 0.8, 0, 0, 0, 0])
    assert torch.allclose(score, z @ u, atol=1e-6)
    assert torch.equal(flagged, score > 0.5)
    assert torch.allclose(z_out[flagged] @ u, torch.full((int(flagged.sum()),), 0.5), atol=1e-5)
    assert torch.equal(z_out[~flagged], z[~flagged])
    # Only the component along û moves.
    moved = z_out[flagged] - z[flagged]
    assert torch.allclose(moved - (moved @ u)[:, None] * u, torch.zeros_like(moved), atol=1e-6)


def test_flag_and_off_modes_do_not_move_latents() -> None:
    z = torch.randn(200, 6) * 2
    z_f, flagged_f, _ = _guard("flag")(z)
    z_o, flagged_o, score_o = _guard("off")(z)
    assert torch.equal(z_f, z) and torch.equal(z_o, z)
    assert flagged_f.any() and not flagged_o.any()
    assert torch.allclose(score_o, _guard()(z)[2])


def test_several_directions_all_end_at_or_below_threshold() -> None:
    u = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])  # not orthogonal
    g = LatentGuard(u, torch.tensor([0.3, 0.2]))
    z = torch.randn(500, 3) * 3
    z_out, flagged, _ = g(z)
    p = z_out @ g.u.T
    assert (p <= g.t + 1e-3).all()
    assert torch.equal(flagged, ((z @ g.u.T) > g.t).any(1))


def test_translate_is_traceable_without_python_branches() -> None:
    g = _guard()
    traced = torch.jit.trace(g, torch.zeros(3, 6))  # traced where nothing is flagged
    z = torch.randn(50, 6) * 3
    for a, b in zip(traced(z), g(z), strict=True):
        assert torch.equal(a, b)


def test_buffers_travel_with_state_dict_and_device() -> None:
    g = _guard()
    sd = g.state_dict()
    assert set(sd) == {"u", "t", "v", "m"}
    h = LatentGuard(torch.ones(6), 0.0)
    h.load_state_dict(sd)
    assert torch.equal(h.u, g.u) and torch.equal(h.t, g.t) and torch.equal(h.v, g.v)


def test_bad_guard_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        _guard("block")
    with pytest.raises(ValueError, match="non-zero"):
        LatentGuard(torch.zeros(4), 0.0)
    with pytest.raises(AssertionError, match="z must be"):
        _guard()(torch.zeros(2, 5))


def test_guarded_generator_generates_from_the_shifted_latent() -> None:
    gen = DCGANGenerator(DCGANConfig(z_dim=6, channels=1, ngf=4)).eval()
    guard = _guard()
    z = torch.randn(64, 6) * 2
    x, flagged, _ = GuardedGenerator(gen, guard)(z)
    assert torch.allclose(x, gen(guard(z)[0]))
    assert torch.allclose(x[~flagged], gen(z)[~flagged])


def test_one_list_of_guard_modes_across_guard_export_and_the_manifest_schema() -> None:
    from feature_unlearn.export.spec import GUARD_MODES
    from feature_unlearn.serve.manifest import GUARD_MODES as MANIFEST_MODES
    from feature_unlearn.unlearn.guard import MODES, GuardMode

    assert MODES == GUARD_MODES == MANIFEST_MODES == ("shift", "flag", "off")
    assert [m.value for m in GuardMode] == list(MODES)


def test_oblique_shift_lands_on_t_and_leaves_the_orthogonal_direction_alone() -> None:
    u = torch.tensor([1.0, 0.0, 0.0])
    kept = torch.tensor([1.0, 1.0, 0.0]) / 2**0.5  # entangled with û: cos 0.71
    v = u - (kept @ u) * kept  # û projected orthogonal to the kept direction
    g = LatentGuard(u, torch.tensor([0.5]), "shift", shift=v)
    assert torch.allclose(g.u[0] @ g.v[0], torch.tensor(1.0))  # rescaled so that ẑ lands on t
    z = torch.tensor([[3.0, -1.0, 2.0], [0.2, 4.0, 1.0]])
    z_hat, flagged, _ = g(z)
    assert flagged.tolist() == [True, False]
    assert torch.allclose(z_hat[0] @ u, torch.tensor(0.5))
    assert torch.allclose(z_hat @ kept, z @ kept)  # the kept attribute's score does not move
    assert torch.equal(z_hat[1], z[1])
    plain = LatentGuard(u, torch.tensor([0.5]), "shift")
    assert not torch.allclose(plain(z)[0] @ kept, z @ kept)


def test_shift_rows_must_point_along_their_direction() -> None:
    with pytest.raises(ValueError, match="shift"):
        LatentGuard(torch.eye(3)[0], 0.0, "shift", shift=torch.eye(3)[1])


def test_a_margin_lands_flagged_latents_below_t_and_leaves_the_others() -> None:
    u = torch.tensor([1.0, 0.0])
    g = LatentGuard(u, torch.tensor([0.5]), "shift", margin=0.3)
    z = torch.tensor([[0.9, 1.0], [0.45, -1.0], [0.1, 2.0]])  # above t, just below t, far below
    z_hat, flagged, _ = g(z)
    assert flagged.tolist() == [True, False, False]
    assert torch.allclose(z_hat[0], torch.tensor([0.2, 1.0]))  # t − margin, along û
    assert torch.equal(z_hat[1:], z[1:])  # a margin is a jump at t, not a wider band
    with pytest.raises(ValueError, match="margin"):
        LatentGuard(u, 0.0, "shift", margin=-1.0)
