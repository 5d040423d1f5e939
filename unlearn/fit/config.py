"""The resolved options of one fit run (written to options.json beside the run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

DEFAULT_MODEL = "faces-dcgan"


@dataclass(frozen=True)
class FitConfig:
    out: Path
    model: str = DEFAULT_MODEL
    features: tuple[str, ...] = ()  # empty: the dataset's default feature
    steps: int = 1000  # total step budget over all rounds
    steps_per_round: int = 250  # measured: the probe rate plateaus within 250 steps of a round
    alpha: float = 1.0
    lr: float = 1e-4
    batch: int = 64  # global batch (split across DDP ranks)
    target_frac: float = 0.5  # share of each batch drawn from target latents (p > t)
    pool: int = 65_536  # latents per round from which batches are drawn
    direction: str = "mean"
    threshold: str = "recall"
    target_recall: float = 0.95
    n_collect: int = 5000
    round_flag_budget: float = 0.1  # later rounds: a new direction may flag at most this share
    goal: float = 0.01  # stop once the labeller's target rate on the probe set is at most this
    probe: int = 2000
    labeller: str | None = None  # default: the zoo's <dataset>-labeller
    labels: Path | None = None  # a person's positives file beside a `collect --sheet` directory
    seed: int = 0
    compile: bool = False
    precision: str = "fp32"
    device: str = "auto"
    checkpoint_every: int = 125
    resume: bool = False
    force: bool = False
    trust_code: bool = False  # --model names a checkpoint built by a module:factory: import it

    # Options that may differ on --resume: where the run lives and how this invocation behaves;
    # everything else shapes the result and must match the run's.
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("out", "resume", "force", "trust_code")

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"], d["labels"] = str(self.out), str(self.labels) if self.labels else None
        d["features"] = list(self.features)
        return d


def default(name: str) -> Any:
    """A field's default, so that the CLI's defaults are these and not a second copy."""
    return FitConfig.__dataclass_fields__[name].default
