"""Kept attributes: directions from labels, the oblique shift, and the refusals of --keep."""

from __future__ import annotations

import pytest
import torch

from feature_unlearn.unlearn.errors import ConfigError, DataError
from feature_unlearn.unlearn.keep import KeptSpace, attribute_rows, oblique_shift, resolve_keep
from feature_unlearn.unlearn.models import AttributeClassifier, ClassifierConfig

LABELLER = AttributeClassifier(ClassifierConfig(heads={"glasses": 2, "grey": 2, "digit": 10}, width=8))


def _entangled(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Latents whose 'glasses' label depends on z0 + z1 and 'grey' on z1: cos(û, grey) ≈ 0.7."""
    z = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    return z, {"glasses": (z[:, 0] + z[:, 1] > 1.5).long(), "grey": (z[:, 1] > 1.0).long()}


def test_resolve_keep() -> None:
    assert resolve_keep((), ["glasses"], LABELLER) == ()
    assert resolve_keep(("none",), ["glasses"], LABELLER) == ()
    assert resolve_keep(("auto",), ["glasses"], LABELLER) == ("grey", "digit")
    assert resolve_keep(("grey",), ["glasses"], LABELLER) == ("grey",)
    with pytest.raises(ConfigError, match="--keep 'glasses': it is a feature being removed"):
        resolve_keep(("glasses",), ["glasses"], LABELLER)
    with pytest.raises(ConfigError, match="--keep 'hat': the labeller does not know it"):
        resolve_keep(("hat",), ["glasses"], LABELLER)


def test_directions_of_binary_and_k_way_attributes() -> None:
    z, y = _entangled()
    grey = attribute_rows(z, y["grey"], 2)
    assert grey.shape == (1, 6) and grey[0].argmax() == 1
    digit = (z[:, 2] > 0).long() + 2 * (z[:, 3] > 0).long()  # 4 used classes of 10
    rows = attribute_rows(z, digit, 10)
    assert rows.shape == (4, 6)  # classes without samples give no row
    space = KeptSpace.estimate(z, {"digit": digit}, {"digit": 10}, ("digit",))
    assert space.basis.shape == (3, 6)  # class means minus the overall mean span 3 dimensions


def test_oblique_shift_is_orthogonal_to_kept_and_lands_on_t() -> None:
    z, y = _entangled()
    u = attribute_rows(z, y["glasses"], 2)[0]
    u = u / u.norm()
    space = KeptSpace.estimate(z, y, {"glasses": 2, "grey": 2}, ("grey",))
    assert 0.5 < space.cosines(u)["grey"] < 0.9
    v = space.shift(u, "glasses")
    assert torch.allclose(u @ v, torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(space.basis @ v, torch.zeros(1), atol=1e-5)
    same, residual = oblique_shift(u, torch.zeros(0, 6))
    assert torch.equal(same, u) and residual == 1.0


def test_a_kept_direction_parallel_to_the_target_is_refused() -> None:
    z, y = _entangled()
    labels = {"glasses": y["glasses"], "twin": y["glasses"].clone()}
    space = KeptSpace.estimate(z, labels, {"glasses": 2, "twin": 2}, ("twin",))
    u = attribute_rows(z, y["glasses"], 2)[0]
    with pytest.raises(ConfigError, match="--keep 'twin': its direction is almost parallel to 'glasses'"):
        space.shift(u, "glasses")


def test_a_kept_attribute_without_labels_is_refused() -> None:
    z, y = _entangled()
    with pytest.raises(DataError, match="--keep 'grey': the collection has no labels"):
        KeptSpace.estimate(z, {"glasses": y["glasses"]}, {"glasses": 2, "grey": 2}, ("grey",))
    with pytest.raises(DataError, match="--keep 'grey': too few"):
        KeptSpace.estimate(z, {"grey": torch.zeros(len(z), dtype=torch.long)}, {"grey": 2}, ("grey",))


def test_auto_drops_a_kept_attribute_parallel_to_the_target() -> None:
    z, y = _entangled()
    labels = {"glasses": y["glasses"], "grey": y["grey"], "twin": y["glasses"].clone()}
    space = KeptSpace.estimate(z, labels, {"glasses": 2, "grey": 2, "twin": 2}, ("grey", "twin"))
    u = attribute_rows(z, y["glasses"], 2)[0]
    pruned, dropped = space.prune({"glasses": u})
    assert dropped == ["twin"] and pruned.attributes == ("grey",) and pruned.basis.shape == (1, 6)
    assert torch.allclose(pruned.shift(u, "glasses") @ pruned.basis.T, torch.zeros(1), atol=1e-5)
