"""fit --keep: the guard shifts orthogonal to kept attributes, in the fit, the export and the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.serve import SafeGenerator
from feature_unlearn.unlearn.fit import FitConfig
from feature_unlearn.unlearn.fit.run import fit
from feature_unlearn.unlearn.guard import LatentGuard, guard_from_record
from feature_unlearn.unlearn.images import to_uint8
from feature_unlearn.unlearn.metrics import generate
from feature_unlearn.unlearn.zoo import load_classifier, load_generator, load_generator_with_meta
from tests.helpers import Z_DIM, guard_entry, make_generator, save_run


def test_export_and_runtime_shift_along_the_oblique_row_to_the_margin(tmp_path: Path) -> None:
    entry = guard_entry(threshold=0.4)
    u = np.asarray(entry["direction"][0], np.float32)
    kept = np.random.default_rng(7).standard_normal(Z_DIM).astype(np.float32)
    kept -= 0.5 * (kept @ u) * u  # entangled with û, not parallel
    kept /= np.linalg.norm(kept)
    w = u - (kept @ u) * kept
    v = w / (w @ u)
    entry.update(shift=[v.tolist()], keep=["grey"], margin=0.25)
    generator = make_generator("dcgan")
    run = save_run(tmp_path / "run", generator, entry)
    export_model(ExportConfig(source=str(run), out=tmp_path / "art"))
    gen = SafeGenerator.load(tmp_path / "art")
    assert gen.spec.guard.keep == ("grey",) and gen.verified.as_dict()["keep"] == ["grey"]
    assert gen.verified.as_dict()["margin"] == 0.25
    np.testing.assert_allclose(np.asarray(gen.manifest["guard"]["shift"])[0], v, atol=1e-6)
    z = np.random.default_rng(0).standard_normal((64, Z_DIM)).astype(np.float32) * 2
    out = gen.generate(z=z)
    excess = np.where(z @ u > 0.4, z @ u - (0.4 - 0.25), 0)  # flagged latents land at t − margin
    z_hat = (z - excess[:, None] * v).astype(np.float32)
    np.testing.assert_allclose(z_hat @ kept, z @ kept, atol=1e-5)  # the kept score does not move
    with torch.no_grad():
        direct = to_uint8(generator(torch.from_numpy(z_hat))).numpy()
    assert out.flagged.sum() >= 5 and np.abs(out.images.astype(int) - direct.astype(int)).max() <= 1


@pytest.mark.slow
def test_fit_keep_moves_the_feature_but_not_the_kept_attribute(tmp_path: Path) -> None:
    """faces-dcgan: eyeglasses and grey hair are entangled (cos ≈ 0.8); the kept guard leaves grey hair."""
    cfg = FitConfig(
        out=tmp_path / "r", model="faces-dcgan", keep=("grey_hair",), steps=2, steps_per_round=2, batch=8,
        n_collect=3000, probe=100, pool=2048, goal=0.0, robust=False,
    )  # fmt: skip
    fit(cfg)
    _, meta = load_generator_with_meta(cfg.out)
    record = meta.record.guard
    assert record is not None and record.keep == ("grey_hair",) and record.shift is not None
    kept_guard = guard_from_record(record)
    plain = LatentGuard(torch.tensor(record.direction), torch.tensor(record.threshold))
    f, labeller = load_generator("faces-dcgan"), load_classifier("faces-labeller")
    z = torch.randn(3000, f.z_dim, generator=torch.Generator().manual_seed(11))
    z = z[plain(z)[1]]  # flagged latents only: the ones the guard moves

    def rates(zz: torch.Tensor) -> dict[str, float]:
        pred = labeller.predict(generate(f, zz))
        return {k: float(pred[k].float().mean()) for k in ("eyeglasses", "grey_hair")}

    before, after_plain, after_kept = rates(z), rates(plain.translate(z)), rates(kept_guard.translate(z))
    assert after_kept["eyeglasses"] < 0.5 * before["eyeglasses"]  # the feature still goes
    moved_plain = abs(after_plain["grey_hair"] - before["grey_hair"])
    assert abs(after_kept["grey_hair"] - before["grey_hair"]) < 0.4 * moved_plain, (before, after_plain, after_kept)
