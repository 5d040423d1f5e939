"""Resumable fit state: weights, optimiser moments, guard rows and history, saved atomically."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from feature_unlearn.unlearn.artifacts import FitCheckpointRecord
from feature_unlearn.unlearn.errors import CheckpointError, UserError
from feature_unlearn.unlearn.fit.config import FitConfig
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint


@dataclass
class FitState:
    model: str
    features: list[str]
    base_sha256: str
    step: int = 0
    round: int = 0
    directions: list[list[float]] = field(default_factory=list)  # guard rows û_k
    thresholds: list[float] = field(default_factory=list)  # t_k
    shifts: list[list[float]] = field(default_factory=list)  # shift rows v_k (= û_k unless --keep)
    keep: list[str] = field(default_factory=list)  # attributes kept (--keep, resolved)
    kept_basis: list[list[float]] = field(default_factory=list)  # orthonormal kept directions [m][z_dim]
    row_features: list[str] = field(default_factory=list)  # the feature of each row
    history: list[dict[str, float]] = field(default_factory=list)  # loss parts every few steps
    probes: list[dict[str, Any]] = field(default_factory=list)  # labeller rates after each round
    detectors: list[dict[str, Any]] = field(default_factory=list)  # per row: precision, recall, ...
    collections: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False
    robust_step: int = 0  # steps of --robust's phase done (it follows the rounds)
    base_ref: str = ""  # how later commands load f: the zoo name, path or factory (a --weights import: its seal)
    guard_margin: Optional[float] = None  # the shipped guard's margin, chosen after the rounds (fit/margin.py)
    margin_table: list[dict[str, Any]] = field(default_factory=list)  # the margins tried and their shifts

    def guard_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(û [K, z_dim], t [K], v [K, z_dim])."""
        return (
            torch.tensor(self.directions, dtype=torch.float32),
            torch.tensor(self.thresholds, dtype=torch.float32),
            torch.tensor(self.shifts or self.directions, dtype=torch.float32),  # pre-keep checkpoints: along û
        )


def save_state(
    path: Path,
    state: FitState,
    g: nn.Module,
    opt: torch.optim.Optimizer,
    cfg: FitConfig,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``checkpoint.safetensors`` + ``checkpoint.json`` atomically; state and options sealed with the weights.

    ``extra``: more tensors to resume with (the robust phase's hits), under names outside ``g.`` and ``opt.``.
    """
    tensors = {f"g.{k}": v for k, v in g.state_dict().items()} | (extra or {})
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).reshape(-1) if k == "step" else v
    record = FitCheckpointRecord(
        kind="fit-checkpoint",
        state=dataclasses.asdict(state),
        param_groups=opt_state["param_groups"],
        options=cfg.as_dict(),
    )
    save_checkpoint(path, tensors, record)


def _check_options(saved: dict[str, Any], cfg: FitConfig, where: Path) -> None:
    """--resume continues the same run: options that shape the result must be the run's."""
    now = cfg.as_dict()
    # an option newer than the run was, in effect, at its default (a run older than --robust-for resumes),
    # or at what the run did before the option existed (a constant learning rate)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    defaults.update({k: v(saved) if callable(v) else v for k, v in cfg.BEFORE_OPTION.items()})
    was = {k: saved.get(k, defaults.get(k)) for k in now}
    differ = [k for k in now if k not in cfg.RESUMABLE_CHANGES and was[k] != now[k]]
    if differ:
        shown = ", ".join(f"--{k.replace('_', '-')} {was[k]!r} (now {now[k]!r})" for k in differ[:4])
        raise UserError(f"--resume: {where} was started with {shown}; repeat the run's options to continue it")


def _fit_state(record: FitCheckpointRecord, where: Path) -> FitState:
    try:
        return FitState(**record.state)
    except TypeError as exc:
        raise CheckpointError(f"{where}.json: state is not a fit state ({exc})") from None


def load_state(path: Path, g: nn.Module, opt: torch.optim.Optimizer, expect: FitState, cfg: FitConfig) -> FitState:
    """Restore g and the optimiser in place; refuse a checkpoint of another model, feature or options."""
    ckpt = load_checkpoint(path)
    record = ckpt.record
    if not isinstance(record, FitCheckpointRecord):
        raise CheckpointError(f"--resume: {path}.json is not a fit checkpoint")
    state = _fit_state(record, path)
    for key in ("model", "features", "base_sha256"):
        if getattr(state, key) != getattr(expect, key):
            raise UserError(
                f"--resume: {path.parent} was fitted with {key} {getattr(state, key)!r}, not {getattr(expect, key)!r}"
            )
    _check_options(record.options, cfg, path.parent)
    g.load_state_dict({k[2:]: v for k, v in ckpt.tensors.items() if k.startswith("g.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": record.param_groups}
    for k, v in ckpt.tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            opt_state["state"].setdefault(int(idx), {})[name] = v.reshape(()) if name == "step" else v
    opt.load_state_dict(opt_state)
    return state
