"""Kept attributes (``fit --keep``): remove one feature without moving the others it is entangled with.

InterFaceGAN's conditional manipulation projects the target direction orthogonal to the
directions of the attributes to keep. Measured on faces-dcgan (guard only, 5,000 latents,
auditor): using that conditional direction as the *detector* flags 75% of latents and moves
bangs and beard instead, so here the detector keeps the plain û and t, and only the *shift*
runs along the conditional direction w = (I − QQᵀ)û, rescaled to v = w / (û·w) so that ẑ still
lands exactly on t. Eyeglasses 7.9% → 2.7% either way; grey hair 12.5% → 7.7% with the plain
shift, 12.3% with the oblique one.

Directions of the kept attributes come from the same collected latents as the target's: the
class-mean difference for a binary attribute, one row per class (class mean − overall mean)
for a K-way one such as the MNIST digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from feature_unlearn.unlearn.errors import ConfigError, DataError
from feature_unlearn.unlearn.models import AttributeClassifier

KEEP_AUTO, KEEP_NONE = "auto", "none"
# sin of the angle between û and the kept subspace below which too little of û is left to remove
MIN_RESIDUAL = 0.2
MIN_CLASS = 10  # a class with fewer collected samples gives no direction (too noisy)


def resolve_keep(keep: tuple[str, ...], features: list[str], labeller: AttributeClassifier) -> tuple[str, ...]:
    """The attributes to keep: named ones, ``auto`` (every other attribute the labeller knows) or ``none``."""
    known = list(labeller.cfg.heads)
    if keep in ((), (KEEP_NONE,)):
        return ()
    if KEEP_AUTO in keep:
        if len(keep) > 1:
            raise ConfigError("--keep auto: give it alone (it already keeps every other attribute)")
        return tuple(a for a in known if a not in features)
    for attr in keep:
        if attr in features:
            raise ConfigError(f"--keep {attr!r}: it is a feature being removed (--feature)")
        if attr not in known:
            raise ConfigError(f"--keep {attr!r}: the labeller does not know it (choose from {', '.join(known)})")
    if len(set(keep)) != len(keep):
        raise ConfigError("--keep: the same attribute is given twice")
    return keep


def attribute_rows(z: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """Directions of one attribute in latent space [r, z_dim] from latents z [N, z_dim] and labels y [N]."""
    if classes == 2:
        pos, neg = z[y == 1], z[y == 0]
        if min(len(pos), len(neg)) < MIN_CLASS:
            return z.new_zeros(0, z.shape[1])
        return (pos.mean(0) - neg.mean(0))[None]
    mean = z.mean(0)
    rows = [z[y == c].mean(0) - mean for c in range(classes) if int((y == c).sum()) >= MIN_CLASS]
    return torch.stack(rows) if rows else z.new_zeros(0, z.shape[1])


@dataclass(frozen=True)
class KeptSpace:
    """Orthonormal basis of the kept attributes' directions, and which attribute spans what."""

    attributes: tuple[str, ...]
    rows: dict[str, torch.Tensor]  # attribute -> its directions [r, z_dim]
    basis: torch.Tensor  # [m, z_dim] orthonormal rows

    @classmethod
    def estimate(
        cls, z: torch.Tensor, labels: dict[str, torch.Tensor], classes: dict[str, int], attributes: tuple[str, ...]
    ) -> KeptSpace:
        rows = {}
        for attr in attributes:
            if attr not in labels:
                raise DataError(f"--keep {attr!r}: the collection has no labels for it (a kept attribute needs labels)")
            rows[attr] = attribute_rows(z, labels[attr], classes[attr])
            if len(rows[attr]) == 0:
                raise DataError(f"--keep {attr!r}: too few collected samples of each class to estimate its direction")
        stacked = torch.cat(list(rows.values())) if rows else z.new_zeros(0, z.shape[1])
        return cls(attributes, rows, _orthonormal(stacked))

    def shift(self, u: torch.Tensor, feature: str) -> torch.Tensor:
        """v [z_dim] with û·v = 1 and v ⟂ every kept direction; refuses when û lies (almost) in their span."""
        v, residual = oblique_shift(u, self.basis)
        if residual < MIN_RESIDUAL:
            raise ConfigError(
                f"--keep {self._closest(u)!r}: its direction is almost parallel to {feature!r}'s "
                f"(only {residual:.2f} of û is orthogonal to the kept directions), nothing would be left to remove"
            )
        return v

    def _closest(self, u: torch.Tensor) -> str:
        def overlap(attr: str) -> float:
            q = _orthonormal(self.rows[attr])
            return float((q @ u).norm())

        return max(self.attributes, key=overlap)

    def without(self, attr: str) -> KeptSpace:
        rows = {a: r for a, r in self.rows.items() if a != attr}
        stacked = torch.cat(list(rows.values())) if rows else self.basis.new_zeros(0, self.basis.shape[1])
        return KeptSpace(tuple(a for a in self.attributes if a != attr), rows, _orthonormal(stacked))

    def prune(self, targets: dict[str, torch.Tensor]) -> tuple[KeptSpace, list[str]]:
        """``--keep auto``: drop kept attributes (the most overlapping first) until every target direction
        keeps at least ``MIN_RESIDUAL`` of itself outside their span (digit and eight on MNIST: eight is
        one of the digit's classes, so keeping the digit would leave nothing of eight to remove)."""
        space, dropped = self, list[str]()
        while space.attributes and min(oblique_shift(u, space.basis)[1] for u in targets.values()) < MIN_RESIDUAL:
            worst = max(space.attributes, key=lambda a: max(space.cosines(u)[a] for u in targets.values()))
            space, dropped = space.without(worst), [*dropped, worst]
        return space, dropped

    def cosines(self, u: torch.Tensor) -> dict[str, float]:
        """|cos| between û and each kept attribute's subspace (the entanglement the keep undoes)."""
        u = u / u.norm()
        return {a: round(float((_orthonormal(r) @ u).norm()), 4) for a, r in self.rows.items()}


def oblique_shift(u: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(v, sin): v = w / (û·w) with w = (I − QQᵀ)û for orthonormal rows Q = ``basis`` [m, z_dim].

    sin = ‖w‖ is how much of û lies outside the kept subspace (1: nothing entangled).
    """
    u = u / u.norm()
    if len(basis) == 0:
        return u, 1.0
    w = u - basis.T @ (basis @ u)
    residual = float(w.norm())
    return w / max(residual, 1e-12) ** 2, residual  # û·w = ‖w‖²


def _orthonormal(rows: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis [m, z_dim] of the span of rows [r, z_dim] (rank-revealing SVD)."""
    if len(rows) == 0:
        return rows
    _, s, vh = torch.linalg.svd(rows.double(), full_matrices=False)
    rank = int((s > s[0] * 1e-6).sum())
    return vh[:rank].float()
