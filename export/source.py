"""What to export: the generator, its sidecar, and the target vector of a fit run (if any)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from export.spec import GUARD_MODES
from unlearn.errors import CheckpointError, ConfigError
from unlearn.zoo import GENERATORS, load_generator_with_meta, resolve


@dataclass(frozen=True)
class GuardVector:
    """The sidecar's ``guard`` entry: K unit rows, K thresholds, the feature names."""

    direction: tuple[tuple[float, ...], ...]
    threshold: tuple[float, ...]
    features: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    name: str  # zoo id or the run directory's name
    path: Path  # checkpoint stem
    generator: nn.Module
    meta: dict[str, Any]
    guard: Optional[GuardVector]


def _floats(x: Any, where: str) -> tuple[float, ...]:
    if not isinstance(x, list) or not x or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        raise CheckpointError(f"{where}: expected a non-empty list of numbers")
    if not all(math.isfinite(v) for v in x):
        raise CheckpointError(f"{where}: holds NaN or infinity")
    return tuple(float(v) for v in x)


def parse_guard(entry: Any, z_dim: int, where: str) -> GuardVector:
    """Check a sidecar ``guard`` entry against the generator's z_dim."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: 'guard' must be an object with direction, threshold, features")
    rows = entry.get("direction")
    if isinstance(rows, list) and rows and not isinstance(rows[0], list):
        rows = [rows]  # one direction written flat
    if not isinstance(rows, list) or not rows:
        raise CheckpointError(f"{where}: guard.direction must be a list of {z_dim}-long rows")
    direction = tuple(_floats(r, f"{where}: guard.direction[{i}]") for i, r in enumerate(rows))
    for i, row in enumerate(direction):
        if len(row) != z_dim:
            raise CheckpointError(
                f"{where}: guard.direction[{i}] has {len(row)} values, the generator's z_dim is {z_dim}"
            )
        if math.sqrt(sum(v * v for v in row)) == 0.0:
            raise CheckpointError(f"{where}: guard.direction[{i}] is the zero vector")
    t = entry.get("threshold")
    threshold = _floats([t] if isinstance(t, (int, float)) else t, f"{where}: guard.threshold")
    if len(threshold) != len(direction):
        raise CheckpointError(f"{where}: guard has {len(direction)} directions but {len(threshold)} thresholds")
    feats = entry.get("features") or []
    if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
        raise CheckpointError(f"{where}: guard.features must be a list of names")
    return GuardVector(direction, threshold, tuple(feats))


def load_source(source: str) -> Source:
    """Load a zoo id, fit run directory or checkpoint (a missing or incomplete one is a CheckpointError)."""
    stem = resolve(source)
    generator, meta = load_generator_with_meta(source)
    z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int):
        raise CheckpointError(f"{stem}.json: the generator has no integer z_dim")
    guard = parse_guard(meta["guard"], z_dim, f"{stem}.json") if "guard" in meta else None
    name = source if source in GENERATORS else (stem.parent.name if stem.name in ("generator", "model") else stem.name)
    return Source(name=name, path=stem, generator=generator, meta=meta, guard=guard)


def guard_mode(requested: Optional[str], source: Source) -> str:
    """shift for a run with a target vector and off for a plain model, unless asked; refuse the impossible."""
    if requested is None:
        return "shift" if source.guard is not None else "off"
    if requested not in GUARD_MODES:
        raise ConfigError(f"--guard {requested!r}: choose from {', '.join(GUARD_MODES)}")
    if requested != "off" and source.guard is None:
        raise ConfigError(
            f"--guard {requested}: {source.name} has no target vector (its sidecar has no 'guard'); "
            "export a fit run directory, or use --guard off"
        )
    return requested


def safe_name(name: str) -> str:
    """A Triton-safe model name: letters, digits, '-', '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    return cleaned or "model"
