"""The resolved options of one fit run (written to options.json beside the run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from feature_unlearn.unlearn.fields import opt

DEFAULT_MODEL = "faces-dcgan"


@dataclass(frozen=True)
class FitConfig:
    out: Path = opt(Path("runs/fit"), "Run directory.")
    model: str = opt(
        DEFAULT_MODEL,
        "Zoo name, checkpoint or run directory of the pre-trained generator f, or your own package.module:factory "
        "(with --trust-code).",
    )
    features: tuple[str, ...] = opt(
        (), "Feature to remove; repeat for several (default: the dataset's).", flag="--feature"
    )
    # measured (README): auto keeps every other faces attribute within ±1.2 points, none moves grey hair −7
    keep: tuple[str, ...] = opt(
        ("auto",),
        "Attribute whose rate must not move: the guard shifts orthogonal to its direction; repeat, "
        "or auto (every other attribute the labeller knows, less any almost parallel to the feature), or none.",
        flag="--keep",
    )
    # measured on faces-dcgan (README): 0 leaves 1.7% eyeglasses on g alone, 0.25 0.7% with grey hair −1.4
    # points, 0.5 0.2% with grey hair −1.9, 1.0 the oracle's rate but grey hair −3.1
    margin: float = opt(
        0.25,
        "The fit's targets: a flagged latent is drawn as f this far below the threshold along û (0: on it, the "
        "paper's ẑ); the shipped guard's margin is --guard-margin.",
        min=0.0,
    )
    # measured (unlearn/fit/margin.py): mnist-dcgan's replayed thick 18% at 0.25, 12% at 1.0, 6.6% at 2.0 (but FID
    # 4.1 → 7.4 and digits 1.7 points at 2.0); faces-dcgan's grey hair −1.4 points at 2.0
    guard_margin: Optional[float] = opt(
        None,
        "Where the shipped guard moves a flagged latent: this far below the threshold along û (default: the largest "
        "margin up to 1 whose kept-attribute shift stays within --guard-budget). The fit's targets keep --margin.",
        min=0.0,
    )
    # measured (README): mnist-vae digit flips on non-target latents 8.96% at 0, 5.42% at 0.1, 4.78% at 1 (where g
    # alone keeps thick on 9.6%: the anchor blocks the removal); mnist-dcgan 5.30% at 0, 7.08% at 0.1
    keep_weight: float = opt(
        0.0,
        "Weight of the kept-attribute anchor: on non-target latents, the labeller's reading of every --keep "
        "attribute on g(z) pulled to its reading of f(z) (KL; 0: off).",
        min=0.0,
    )
    guard_budget: float = opt(
        0.75, "Largest kept-attribute rate shift (labeller, points) the chosen --guard-margin may cause.", min=0.0
    )
    # measured on mnist-vae (README): digit flips on non-target latents 10.0% with the flow fine-tuned, 6.1% frozen
    train_prior: bool = opt(
        False, "Also fine-tune the generator's learned prior (g.prior, a VAE's flow); by default only the decoder."
    )
    steps: int = opt(1000, "Step budget over all rounds.", min=1)
    # measured: the probe rate plateaus within 250 steps of a round
    steps_per_round: int = opt(250, "Steps before re-collecting on the current g.", min=1)
    alpha: float = opt(1.0, "Weight α of the unlearning terms.", min=0.0)
    lr: float = opt(1e-4, "Adam learning rate.", min=0.0)
    # measured on mnist-dcgan (README): digit flips on non-target latents 5.4% constant, 4.6% cosine
    lr_schedule: str = opt(
        "cosine",
        "Learning rate over each round and over --robust's phase: cosine (from --lr down to 0) or constant.",
    )
    batch: int = opt(64, "Global batch (split across torchrun processes).", min=2)
    target_frac: float = opt(0.5, "Share of each batch drawn from target latents (p > t).")
    pool: int = opt(65_536, "Latents per round from which batches are drawn.", min=2)
    direction: str = opt("mean", "Target vector: mean (the paper's z_e) or logreg.")
    threshold: str = opt("recall", "Threshold rule: pooled (the paper's), midpoint, recall or f1.")
    target_recall: float = opt(0.95, "Recall of the collected positives kept by --threshold recall.")
    n_collect: int = opt(5000, "Samples labelled per round.", min=10)
    # measured (README): at recall 0.95 round 0 flags 16-21% of the faces generators' prior, 44% of mnist-dcgan's and
    # 66% of mnist-vae's (thick is nearly not linear there, AUC 0.82), and g then redraws the digits it must keep
    flag_budget: float = opt(
        0.4, "Most of the prior round 0's direction may flag (t rises above the recall target's).", min=0.0, max=1.0
    )
    # later rounds: a new direction may flag at most this share (measured: uncapped, 56% at precision 0.03)
    round_flag_budget: float = opt(0.1, "Most of the prior a later round's direction may flag.", min=0.0, max=1.0)
    goal: float = opt(0.01, "Stop once the labeller's target rate on the probe set is at most this.", min=0.0, max=1.0)
    probe: int = opt(2000, "Latents of the fixed probe set.", min=10)
    labeller: Optional[str] = opt(
        None, "Labelling classifier: zoo name or package.module:factory (default: the zoo's <dataset>-labeller)."
    )
    labels: Optional[Path] = opt(None, "A person's positives file from collect --sheet.")
    seed: int = opt(0, "Seed of collection, pools and probes.")
    compile: bool = opt(False, "torch.compile g (the plain module is what gets saved).")
    precision: str = opt("fp32", "fp32, bf16 or fp16 (CUDA only).")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")
    checkpoint_every: int = opt(125, "Steps between resumable checkpoints.", min=1)
    resume: bool = opt(False, "Continue the run in --out (with the run's options).")
    force: bool = opt(False, "Overwrite a non-empty --out.")
    trust_code: bool = opt(False, "Allow a checkpoint built by a module:factory to import and run that code.")
    weights: Optional[Path] = opt(None, "safetensors weights loaded into a --model package.module:factory.")
    # measured (README): on by default since it meets issue 9's targets on faces-dcgan and mnist-dcgan in 2.5 min
    robust: bool = opt(
        True,
        "After the rounds, --robust-for more steps that mine PGD latents against the current g + guard "
        "(labeller only) and unlearn them (--no-robust: the paper's fit alone).",
    )
    robust_for: int = opt(300, "Steps of the robust phase.", min=1)
    robust_batch: int = opt(16, "Fresh PGD starts per robust step.", min=2)
    robust_sample: int = opt(32, "Buffered hits trained on per robust step.", min=2)
    robust_buffer: int = opt(2048, "Hits the robust phase keeps (the oldest go first).", min=1)
    robust_eps: float = opt(0.5, "L∞ budget per latent coordinate of the mining attack.", min=0.0)
    robust_steps: int = opt(20, "PGD steps of the mining attack.", min=1)
    robust_margin: float = opt(
        4.0, "Largest extra margin below the threshold the robust targets may be moved (along the shift).", min=0.0
    )
    # measured on mnist-dcgan (README): digit flips on non-target latents 4.7% at 0.15, 5.2% at 0.25, 8.0% at 2
    # (replayed thick 4.5%, 3.7%, 2.2%; oracle 3.1%)
    robust_weight: float = opt(0.2, "Weight of the robust term.", min=0.0)

    # Options that may differ on --resume: where the run lives and how this invocation behaves;
    # everything else shapes the result and must match the run's.
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("out", "resume", "force", "trust_code")
    # What a checkpoint written before an option existed did, where that differs from today's default.
    # (A callable reads it from the run's saved options: before --guard-margin, the guard shipped at --margin.)
    BEFORE_OPTION: ClassVar[dict[str, Any]] = {
        "lr_schedule": "constant",
        "train_prior": True,
        "flag_budget": 1.0,
        "guard_margin": lambda saved: saved.get("margin"),
    }

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"], d["labels"] = str(self.out), str(self.labels) if self.labels else None
        d["weights"] = str(self.weights) if self.weights else None
        d["features"], d["keep"] = list(self.features), list(self.keep)
        return d
