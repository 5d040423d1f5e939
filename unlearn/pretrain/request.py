"""What a person asks ``pretrain`` for: a zoo recipe, or a dataset and model, with a few overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from feature_unlearn.unlearn.fields import opt

if TYPE_CHECKING:
    from feature_unlearn.unlearn.pretrain.run import PretrainConfig


@dataclass(frozen=True)
class PretrainRequest:
    out: Path = opt(..., "Output directory.")
    recipe: Optional[str] = opt(None, "Reproduce a zoo entry exactly (e.g. mnist-vae).")
    dataset: Optional[str] = opt(None, "mnist, faces or folder:PATH (with --model).")
    model: Optional[str] = opt(None, "vae, dcgan, labeller or auditor (with --dataset).")
    exclude: Optional[str] = opt(None, "Train an oracle without this binary attribute.")
    epochs: Optional[int] = opt(None, "Override the recipe's epochs.", min=1)
    seed: Optional[int] = opt(None, "Override the recipe's seed.")
    width: Optional[int] = opt(None, "Override the recipe's network width (channels of the first stage).", min=1)
    pack: Optional[int] = opt(None, "dcgan: images the discriminator judges together (PacGAN; 1 = plain).", min=1)
    d_norm: Optional[str] = opt(
        None, "dcgan: the discriminator's normalisation: batch (DCGAN), none or spectral (SNGAN)."
    )
    r1: Optional[float] = opt(
        None, "dcgan: weight gamma of the R1 gradient penalty on real images (0 = off), every 4 steps.", min=0.0
    )
    ema: Optional[float] = opt(
        None,
        "dcgan: decay of the generator's weight average, the model kept (0 = the live generator; recipe 0.999).",
        min=0.0,
    )
    select_last: Optional[int] = opt(
        None, "dcgan: keep the best of the last N epochs by the labeller's attribute-rate gap (0: the last).", min=0
    )
    attr_weight: Optional[float] = opt(
        None,
        "vae/dcgan: weight of the zoo labeller's attribute term (dcgan: generated shares toward the data's; "
        "vae: reconstructions keep their input's attributes); 0 = off.",
        min=0.0,
    )
    limit: Optional[int] = opt(None, "Use only the first N images.", min=16)
    auditor: Optional[str] = opt(None, "Classifier for metrics (default: the zoo's <dataset>-auditor).")
    eval_samples: int = opt(10_000, "Generated samples graded for the metrics.", min=100)
    prior: Optional[str] = opt(None, "VAE latent prior: none or flow (overrides the recipe's).")
    measure_only: bool = opt(
        False, "Re-grade the generator already in --out (model.safetensors) with the current classifiers; no training."
    )

    def resolve(self) -> PretrainConfig:
        """The recipe (a zoo entry's, or the dataset's) with the overrides applied."""
        from feature_unlearn.unlearn.pretrain.recipes import check_prior, resolve_recipe
        from feature_unlearn.unlearn.pretrain.run import PretrainConfig

        base = resolve_recipe(self.recipe, self.dataset, self.model, self.exclude)
        asked: dict[str, object] = {"epochs": self.epochs, "seed": self.seed, "width": self.width, "prior": self.prior}
        asked.update(select_last=self.select_last, pack=self.pack, d_norm=self.d_norm, r1=self.r1)
        asked.update(attr_weight=self.attr_weight, ema=self.ema)
        overrides = {k: v for k, v in asked.items() if v is not None}
        if self.prior is not None:  # refused before any data is loaded
            check_prior(self.prior, base.model)
        return PretrainConfig(
            dataset=base.dataset,
            model=base.model,
            exclude=base.exclude,
            out=self.out,
            train=dataclasses.replace(base.train, **overrides),
            limit=self.limit,
            auditor=self.auditor,
            eval_samples=self.eval_samples,
            measure_only=self.measure_only,
        )
