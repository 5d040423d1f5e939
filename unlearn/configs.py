"""The configs of ``evaluate`` (with its attack) and ``collect``: torch-free, so the CLI reads them cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from feature_unlearn.unlearn.fields import opt


@dataclass(frozen=True)
class AttackConfig:
    eps: float = opt(0.5, "PGD radius per latent coordinate.", min=0.0)
    steps: int = opt(20, "PGD steps.", min=1)
    starts: int = opt(512, "Random PGD starts.", min=1)
    seed: int = opt(99, "Seed of the starts.")
    batch: int = opt(256, "Starts attacked at once.", min=1)


@dataclass(frozen=True)
class EvalConfig:
    run: Path = opt(..., "A fit run directory.")
    n: int = opt(10_000, "Random latents per model.", min=100)
    seed: int = opt(0, "Seed of the latents.")
    attack: bool = opt(False, "Also run the latent-space PGD attack.")
    attack_cfg: AttackConfig = field(default_factory=AttackConfig)
    image_check: bool = opt(
        False,
        "Also grade unlearned + guard + the image check export --image-check ships (distilled once into the run "
        "directory); the attack on it is adaptive: it also pushes the check's score down.",
    )
    auditor: str | None = opt(None, "Judging classifier (default: the zoo's <dataset>-auditor).")
    out: Path | None = opt(None, "Where evaluation.{json,md,png} go (default: the run directory).")
    trust_code: bool = opt(False, "Allow a run whose generator is built by a module:factory to import that code.")


@dataclass(frozen=True)
class CollectConfig:
    out: Path = opt(..., "Output directory.")
    model: str = opt("faces-dcgan", "Zoo name, checkpoint or run directory.")
    features: tuple[str, ...] = opt((), "Feature(s) to label (default: the dataset's).", flag="--feature")
    n: int = opt(5000, "Number of samples.", min=2)
    seed: int = opt(0, "Seed of the latents.")
    sheet: bool = opt(False, "Write numbered contact sheets for a person to label.")
    labels: Path | None = opt(None, "A person's positive tile numbers (beside the sheets' latents).")
    labeller: str | None = opt(None, "Labelling classifier (default: the zoo's <dataset>-labeller).")
    trust_code: bool = opt(False, "Allow a checkpoint built by a module:factory to import and run that code.")
