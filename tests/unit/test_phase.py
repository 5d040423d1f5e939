"""export.phase and export.mixed: the int8 and bf16 rewrites compute what the transposed convolutions did."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from feature_unlearn.export import mixed
from feature_unlearn.export.mixed import CONVS, BFloat16Generator, Cast, fastest_bf16
from feature_unlearn.export.phase import (
    MatMulConvTranspose,
    PhaseConvTranspose,
    ShuffleConvTranspose,
    decomposable,
    fold_all_batchnorms,
    rewrite_transposed_convs,
)
from feature_unlearn.export.precision import calibration_latents, resolve_precision
from feature_unlearn.unlearn.errors import ConfigError
from tests.helpers import make_generator


@pytest.mark.parametrize(
    ("k", "s", "p", "hw"),
    [(4, 2, 1, (5, 6)), (4, 2, 1, (1, 1)), (4, 4, 0, (3, 2)), (6, 2, 2, (4, 4)), (2, 2, 0, (3, 5))],
)
@pytest.mark.parametrize("rewrite", [PhaseConvTranspose, ShuffleConvTranspose])
def test_phase_decomposition_is_exact(
    k: int, s: int, p: int, hw: tuple[int, int], rewrite: type[PhaseConvTranspose | ShuffleConvTranspose]
) -> None:
    torch.manual_seed(k * 10 + s)
    conv = nn.ConvTranspose2d(3, 5, k, s, p)
    x = torch.randn(2, 3, *hw)
    assert decomposable(conv, hw) == "phase"
    with torch.no_grad():
        torch.testing.assert_close(rewrite(conv, hw, nn.Tanh())(x), torch.tanh(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.ConvTranspose2d(3, 5, 3, 1, 1),  # stride 1 on a spatial input: nothing to split
        nn.ConvTranspose2d(3, 5, 5, 2, 2),  # kernel not a multiple of the stride
        nn.ConvTranspose2d(3, 5, 4, 2, 1, output_padding=1),
        nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2),
    ],
)
def test_layers_without_an_exact_rewrite_are_left_alone(conv: nn.ConvTranspose2d) -> None:
    assert decomposable(conv, (4, 4)) is None


def test_matmul_form_of_a_transposed_conv_on_one_pixel() -> None:
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(6, 4, 4, 1, 0)
    x = torch.randn(3, 6, 1, 1)
    assert decomposable(conv, (1, 1)) == "matmul"
    with torch.no_grad():
        torch.testing.assert_close(MatMulConvTranspose(conv, nn.ReLU())(x), torch.relu(conv(x)))


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_rewritten_generator_matches_the_original(kind: str) -> None:
    g = make_generator(kind, channels=3)
    z = torch.randn(16, g.z_dim)
    rewritten, counts = rewrite_transposed_convs(g, z[:2], min_channels=1)
    assert counts["kept"] == 0 and counts["phase"] == 3 and counts["activations_moved"] >= 3
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())  # all int8-able now
    # every BatchNorm behind a conv is folded; the VAE's first one follows its Linear + view and stays
    assert sum(isinstance(m, nn.BatchNorm2d) for m in rewritten.modules()) == (kind == "vae")
    with torch.no_grad():
        torch.testing.assert_close(rewritten(z), g(z), atol=2e-5, rtol=1e-4)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())  # the original is untouched


def test_narrow_layers_stay_transposed_convs() -> None:
    g = make_generator("dcgan", channels=3)  # ngf 8: 32 -> 16 -> 8 -> 3 channels
    rewritten, counts = rewrite_transposed_convs(g, torch.randn(2, g.z_dim))
    assert (counts["phase"], counts["kept"]) == (1, 2)  # only 32 -> 16 has 16 output channels
    kept = [m.out_channels for m in rewritten.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert kept == [8, 3]


def test_bf16_generator_keeps_its_wide_transposed_convs_and_the_rest_fp32() -> None:
    g = make_generator("vae", channels=3)
    z = torch.randn(64, g.z_dim)
    b = BFloat16Generator(g, CONVS)
    casts = {type(m.layer).__name__: m.dtype for m in b.modules() if isinstance(m, Cast)}
    assert casts["ConvTranspose2d"] == torch.bfloat16 and casts["ShuffleConvTranspose"] == torch.bfloat16
    assert casts["Linear"] == torch.float32 and casts["BatchNorm2d"] == torch.float32  # the VAE's unfolded one
    wrapped = [m for m in b.modules() if isinstance(m, Cast)]
    assert all(p.dtype == m.dtype for m in wrapped for p in m.layer.parameters(recurse=False))
    with torch.no_grad():
        d = (b(z) - g(z)).abs()
    assert b(z).dtype == torch.float32 and 0 < d.mean() < 0.01 and d.max() < 0.1


@pytest.mark.parametrize(("budget", "vectors"), [((255, 255.0), "bf16"), ((0, 0.0), "fp32")])
def test_vector_layers_go_bf16_only_within_the_pixel_budget(
    budget: tuple[int, float], vectors: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mixed, "PIXEL_BUDGET", budget)
    b = fastest_bf16(make_generator("dcgan", channels=3))
    assert b.probe["vector_layers"] == vectors and b.probe["all_bf16_error"]["max"] > 0  # bf16 really rounds
    first = next(m for m in b.modules() if isinstance(m, Cast) and isinstance(m.layer, MatMulConvTranspose))
    assert first.dtype == (torch.bfloat16 if vectors == "bf16" else torch.float32)


def test_batchnorm_folding_keeps_eval_outputs() -> None:
    torch.manual_seed(1)
    seq = nn.Sequential(nn.ConvTranspose2d(3, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    seq[1].running_mean.normal_()
    seq[1].running_var.uniform_(0.5, 2.0)
    seq.eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        want = seq(x)
        assert fold_all_batchnorms(seq) == 1 and isinstance(seq[1], nn.Identity)
        torch.testing.assert_close(seq(x), want, atol=1e-5, rtol=1e-5)


def test_precision_refusals_name_the_flag_and_the_alternative() -> None:
    with pytest.raises(ConfigError, match=r"--precision bf16: this CPU has no bf16 .* fastest precision here is int8"):
        resolve_precision("bf16", False, cuda=False, flags={"avx512_vnni"})
    with pytest.raises(ConfigError, match="fastest precision here is fp32"):
        resolve_precision("bf16", False, cuda=False, flags=set())
    assert resolve_precision("bf16", False, cuda=False, flags={"avx512_bf16"}) == "bf16"
    assert resolve_precision("bf16", False, cuda=True, flags=set()) == "bf16"
    assert resolve_precision("fp32", True, cuda=False, flags=set()) == "fp16"
    with pytest.raises(ConfigError, match="--fp16 with --precision int8"):
        resolve_precision("int8", True, cuda=False, flags=set())
    with pytest.raises(ConfigError, match="--precision 'int4'"):
        resolve_precision("int4", False, cuda=False, flags=set())


def test_calibration_needs_latents(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    assert calibration_latents("64", 8, 0).shape == (64, 8)
    with pytest.raises(ConfigError, match="--calibration 0: int8 needs calibration latents"):
        calibration_latents("0", 8, 0)
    empty = tmp_path / "z.npy"
    np.save(empty, np.zeros((0, 8), np.float32))
    with pytest.raises(ConfigError, match=r"--calibration .*z.npy: expected finite latents \[N > 0, 8\]"):
        calibration_latents(str(empty), 8, 0)
    np.save(empty, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="unreadable .npy"):  # never unpickled
        calibration_latents(str(empty), 8, 0)
    with pytest.raises(ConfigError, match="not a count and not an existing .npy file"):
        calibration_latents(str(tmp_path / "missing.npy"), 8, 0)
