"""``unlearn-cli pretrain``: train one zoo entry, write weights, sample grids and metrics."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from feature_unlearn import __version__
from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.data import ImageSet, train_test
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.images import save_grid
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint, write_json
from feature_unlearn.unlearn.metrics import agreement, attribute_rates, fid, generate, latents
from feature_unlearn.unlearn.models import VAE, AttributeClassifier, arch_dict, build_generator, z_dim_of
from feature_unlearn.unlearn.models.dcgan import check_d_norm
from feature_unlearn.unlearn.pretrain.attrterm import RateMatch, ReadingMatch
from feature_unlearn.unlearn.pretrain.classifier import accuracy, train_classifier
from feature_unlearn.unlearn.pretrain.common import TrainConfig, resolution_of
from feature_unlearn.unlearn.pretrain.gan import train_dcgan
from feature_unlearn.unlearn.pretrain.recipes import RECIPES, check_prior, classifier_for
from feature_unlearn.unlearn.pretrain.select import SnapshotSelector
from feature_unlearn.unlearn.pretrain.vae import train_vae

MODELS = ("vae", "dcgan", "labeller", "auditor")


@dataclass(frozen=True)
class PretrainConfig:
    dataset: str
    model: str
    out: Path
    train: TrainConfig
    exclude: str | None = None
    limit: int | None = None  # keep the first N images (tests, quick looks)
    auditor: str | None = None  # classifier used for metrics; default: the zoo's <dataset>-auditor
    eval_samples: int = 10_000
    grid_every: int = 5  # epochs between sample grids
    measure_only: bool = False  # re-grade the generator already in ``out``; no training


def _check(cfg: PretrainConfig, data: ImageSet) -> None:
    if cfg.model not in MODELS:
        raise ConfigError(f"--model {cfg.model!r}: choose from {', '.join(MODELS)}")
    check_prior(cfg.train.prior, cfg.model)
    if cfg.model in ("vae", "dcgan"):
        resolution_of(data)  # a size the architectures lack is refused before --out is written
    if cfg.exclude is not None and data.classes.get(cfg.exclude) != 2:
        raise ConfigError(
            f"--exclude {cfg.exclude!r}: not a binary attribute of {cfg.dataset} ({', '.join(data.binary_attrs)})"
        )


def _check_gan_options(cfg: PretrainConfig) -> None:
    """--pack, --d-norm, --r1, --ema and --select-last are DCGAN options; the batch must split into packs."""
    check_d_norm(cfg.train.d_norm, "--d-norm")
    if cfg.train.d_norm != "batch" and cfg.model != "dcgan":
        raise ConfigError(f"--d-norm {cfg.train.d_norm}: the dcgan's discriminator option, not a {cfg.model}'s")
    if cfg.train.r1 < 0:
        raise ConfigError(f"--r1 {cfg.train.r1}: a penalty weight is >= 0 (0 = off)")
    if cfg.train.r1 > 0 and cfg.model != "dcgan":
        raise ConfigError(f"--r1 {cfg.train.r1}: the penalty is on the dcgan's discriminator, not a {cfg.model}")
    pack = cfg.train.pack
    if pack != 1 and cfg.model != "dcgan":
        raise ConfigError(f"--pack {pack}: packing is for the dcgan's discriminator, not a {cfg.model}")
    if cfg.train.batch % pack:
        raise ConfigError(f"--pack {pack}: the batch of {cfg.train.batch} does not split into packs of {pack}")
    _check_attr_weight(cfg)
    _check_ema(cfg)
    n = cfg.train.select_last
    if n == 0:
        return
    if cfg.model != "dcgan":
        raise ConfigError(f"--select-last {n}: snapshot selection is for the dcgan, not a {cfg.model}")
    if n > cfg.train.epochs:
        raise ConfigError(f"--select-last {n}: more than the {cfg.train.epochs} epochs trained")
    if cfg.dataset.startswith("folder:"):
        raise ConfigError(f"--select-last {n}: needs the zoo labeller of the dataset; {cfg.dataset} has none")


def _check_ema(cfg: PretrainConfig) -> None:
    ema = cfg.train.ema
    if not 0.0 <= ema < 1.0:
        raise ConfigError(f"--ema {ema}: a decay is in [0, 1) (0 = the live generator)")
    if ema != TrainConfig.ema and cfg.model != "dcgan":
        raise ConfigError(f"--ema {ema}: the weight average is the dcgan generator's, not a {cfg.model}'s")


def _check_attr_weight(cfg: PretrainConfig) -> None:
    w = cfg.train.attr_weight
    if w == 0:
        return
    if w < 0:
        raise ConfigError(f"--attr-weight {w}: a weight is >= 0 (0 = off)")
    if cfg.model not in ("vae", "dcgan"):
        raise ConfigError(f"--attr-weight {w}: the labeller's term trains a vae or dcgan, not a {cfg.model}")
    if cfg.dataset.startswith("folder:"):
        raise ConfigError(f"--attr-weight {w}: needs the zoo labeller of the dataset; {cfg.dataset} has none")


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    _check_gan_options(cfg)  # before the data loads
    train, test = train_test(cfg.dataset, cfg.limit)
    _check(cfg, train)
    if cfg.exclude:
        train, test = train.without(cfg.exclude), test.without(cfg.exclude)
    if cfg.measure_only:
        return remeasure(cfg, train, test)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "options.json", {**_jsonable(cfg), "version": __version__})
    start = time.perf_counter()
    if cfg.model in ("labeller", "auditor"):
        model: nn.Module = train_classifier(train, "cnn" if cfg.model == "labeller" else "resnet", cfg.train)
        metrics: dict[str, Any] = {"heldout_accuracy": accuracy(model, test), "heldout_n": len(test)}  # type: ignore[arg-type]
        kind = "classifier"
    else:
        model, chosen = _train_generator(cfg, train)
        metrics = _generator_metrics(cfg, model, train, test)
        if chosen:
            metrics["snapshot"] = chosen
        kind = "generator"
    metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    record = ModelRecord(
        kind=kind,
        arch=arch_dict(model.cfg),
        dataset=cfg.dataset,
        exclude=cfg.exclude,
        role=cfg.model,
        train_args=dataclasses.asdict(cfg.train),
        train_images=len(train),
        metrics=metrics,
        version=__version__,
    )
    save_checkpoint(cfg.out / "model", model.state_dict(), record)
    write_json(cfg.out / "metrics.json", metrics)
    return metrics


def _train_generator(cfg: PretrainConfig, train: ImageSet) -> tuple[nn.Module, dict[str, Any]]:
    """The trained generator, and (with ``select_last``) which epoch was kept and the gaps behind it."""
    z_fixed = latents(64, cfg.train.z_dim, seed=1234)
    selector = _selector(cfg, train)
    term = _attr_term(cfg, train)

    def on_epoch(epoch: int, g: nn.Module) -> None:
        if selector is not None:
            selector(epoch, g)
        if isinstance(term, RateMatch):
            tqdm.write(f"epoch {epoch + 1}: labeller's worst share gap {term.worst_gap():.1f} points")
        if (epoch + 1) % cfg.grid_every == 0 and epoch + 1 < cfg.train.epochs:
            save_grid(generate(g, z_fixed), cfg.out / f"samples-epoch{epoch + 1:03d}.png", nrow=8)

    if cfg.model == "vae":
        assert term is None or isinstance(term, ReadingMatch)
        g: nn.Module = train_vae(train, cfg.train, on_epoch, lambda vae: _keep_encoder(cfg.out, vae), term)
    else:
        assert term is None or isinstance(term, RateMatch)
        g = train_dcgan(train, cfg.train, on_epoch, term)
    chosen = selector.apply(g) if selector is not None else {}
    save_grid(generate(g, z_fixed), cfg.out / "samples.png", nrow=8)
    return g, chosen


def _labeller(cfg: PretrainConfig) -> AttributeClassifier:
    """The dataset's zoo labeller: a fresh copy, so that a term freezing it changes nothing shared."""
    from feature_unlearn.unlearn.zoo import load_classifier

    return load_classifier(classifier_for(cfg.dataset, "labeller"))


def _attr_term(cfg: PretrainConfig, train: ImageSet) -> RateMatch | ReadingMatch | None:
    """The labeller's term for the model trained (``--attr-weight``; None when 0), reading generated
    images through the degradations the zoo labeller was trained with."""
    if cfg.train.attr_weight == 0:
        return None
    degrade = RECIPES[classifier_for(cfg.dataset, "labeller")].train.augment
    if cfg.model == "vae":
        return ReadingMatch(_labeller(cfg), degrade, cfg.train.seed)
    return RateMatch(_labeller(cfg), train.images, degrade, cfg.train.seed)


def _selector(cfg: PretrainConfig, train: ImageSet) -> SnapshotSelector | None:
    if cfg.train.select_last == 0:
        return None
    name = classifier_for(cfg.dataset, "labeller")
    first = cfg.train.epochs - cfg.train.select_last
    return SnapshotSelector(_labeller(cfg), train.images, cfg.train.z_dim, first, name=name)


def _keep_encoder(out: Path, vae: VAE) -> None:
    """The encoder beside the run (not in the zoo): a prior can be refitted without retraining the VAE."""
    from safetensors.torch import save_file

    meta = {"arch": json.dumps(arch_dict(vae.decoder.cfg))}
    save_file({k: v.contiguous() for k, v in vae.encoder.state_dict().items()}, str(out / "encoder.safetensors"), meta)


def remeasure(cfg: PretrainConfig, train: ImageSet, test: ImageSet) -> dict[str, Any]:
    """Re-grade the generator in ``cfg.out`` with today's classifiers and rewrite its record's metrics.

    The weights are unchanged; the sealed record (and so the file's sha256) is rewritten. The
    training time of the original run is kept.
    """
    stem = cfg.out / "model"
    ckpt = load_checkpoint(stem)
    record = ckpt.record
    if not isinstance(record, ModelRecord) or record.kind != "generator":
        raise ConfigError(f"--measure-only: {stem}.json is not a generator checkpoint")
    if (record.dataset, record.exclude) != (cfg.dataset, cfg.exclude):
        raise ConfigError(
            f"--measure-only: {stem}.json was trained on {record.dataset} without {record.exclude}, "
            f"not {cfg.dataset} without {cfg.exclude}"
        )
    g = build_generator(record.arch, f"{stem}.json")
    g.load_state_dict(ckpt.tensors)
    metrics = _generator_metrics(cfg, g.eval(), train, test)
    metrics["train_seconds"] = record.metrics.get("train_seconds")
    save_checkpoint(stem, ckpt.tensors, dataclasses.replace(record, metrics=metrics))
    write_json(cfg.out / "metrics.json", metrics)
    return metrics


def _generator_metrics(cfg: PretrainConfig, g: nn.Module, train: ImageSet, test: ImageSet) -> dict[str, Any]:
    """Auditor rates, FID and the labeller-auditor agreement of 10,000 (``eval_samples``) generated images."""
    from feature_unlearn.unlearn.zoo import load_classifier

    name = cfg.auditor or classifier_for(cfg.dataset, "auditor")
    try:
        auditor = load_classifier(name)
    except Exception as exc:  # no auditor yet (e.g. building the zoo from scratch): skip metrics
        return {"auditor": None, "note": f"no metrics: auditor {name!r} unavailable ({exc})"}
    fake = generate(g, latents(cfg.eval_samples, z_dim_of(g), seed=777))
    metrics: dict[str, Any] = {
        "auditor": name,
        "samples": cfg.eval_samples,
        "generated_rates": attribute_rates(auditor, fake),
        "data_rates": attribute_rates(auditor, train.images),
        "data_label_rates": train.rates(),
        "fid_heldout": round(fid(auditor, test.images, fake), 4),
        "fid_train_vs_heldout": round(fid(auditor, test.images, train.images), 4),
    }
    return {**metrics, **_labeller_view(cfg.dataset, auditor, fake)}


def _labeller_view(dataset: str, auditor: AttributeClassifier, fake: torch.Tensor) -> dict[str, Any]:
    """The labeller's rates on the same samples and its agreement with the auditor, per binary attribute.

    Stored beside the auditor's rates so that a disagreement (the fit sees one thing, the grade
    another) is on record rather than hidden.
    """
    from feature_unlearn.unlearn.zoo import load_classifier

    name = classifier_for(dataset, "labeller")
    try:
        labeller = load_classifier(name)
    except Exception as exc:  # a user's folder dataset has no zoo labeller
        return {"labeller": None, "labeller_note": f"no agreement: labeller {name!r} unavailable ({exc})"}
    return {
        "labeller": name,
        "labeller_rates": attribute_rates(labeller, fake),
        "labeller_auditor_agreement": agreement(labeller, auditor, fake),
    }


def _jsonable(cfg: PretrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["out"] = str(cfg.out)
    return d
