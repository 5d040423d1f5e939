"""What to export: the generator, its sidecar, and the target vector of a fit run (if any)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from feature_unlearn.export.spec import GUARD_MODES
from feature_unlearn.unlearn.artifacts import GuardRecord
from feature_unlearn.unlearn.errors import CheckpointError, ConfigError
from feature_unlearn.unlearn.zoo import GENERATORS, ModelMeta, load_generator_with_meta, resolve


@dataclass(frozen=True)
class Source:
    name: str  # zoo id or the run directory's name
    path: Path  # checkpoint stem
    generator: nn.Module
    meta: ModelMeta  # the sealed record and the weights' sha256
    guard: Optional[GuardRecord]


def load_source(source: str, trust_code: bool = False) -> Source:
    """Load a zoo id, fit run directory or checkpoint (a missing or incomplete one is a CheckpointError)."""
    stem = resolve(source)
    generator, meta = load_generator_with_meta(source, trust_code)
    z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int):
        raise CheckpointError(f"{stem}.json: the generator has no integer z_dim")
    guard = meta.record.guard
    if guard is not None and guard.z_dim != z_dim:
        raise CheckpointError(
            f"{stem}.json: guard.direction rows have {guard.z_dim} values, the generator's z_dim is {z_dim}"
        )
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
