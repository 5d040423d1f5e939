"""``unlearn-cli evaluate``: grade a fit run with the independent auditor (never the labeller).

Residual target rate of original, original + guard, unlearned, unlearned + guard and the
zoo oracle; FID in the auditor's feature space against held-out data (and IS on MNIST);
preservation on non-target latents; attribute flips between f and g (entanglement); and,
with ``attack``, latent-space PGD success rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from feature_unlearn.unlearn.artifacts import ModelRecord
from feature_unlearn.unlearn.byo import load_detector
from feature_unlearn.unlearn.configs import EvalConfig
from feature_unlearn.unlearn.data import ImageSet, counterfactual_test, train_test
from feature_unlearn.unlearn.errors import ConfigError, UserError
from feature_unlearn.unlearn.fit.loss import msssim_loss
from feature_unlearn.unlearn.flipfloor import random_step_flips
from feature_unlearn.unlearn.guard import GuardedGenerator, LatentGuard, guard_from_record
from feature_unlearn.unlearn.imagecheck import (
    ImageCheck,
    image_check_for_run,
    labeller_of_run,
)
from feature_unlearn.unlearn.images import grid, save_png
from feature_unlearn.unlearn.io import sha256_file
from feature_unlearn.unlearn.metrics import attribute_rates, fid, generate, latents
from feature_unlearn.unlearn.models import AttributeClassifier, z_dim_of
from feature_unlearn.unlearn.pretrain.recipes import DEFAULT_FEATURE, classifier_for, oracle_for
from feature_unlearn.unlearn.robustness import Defended, Model, adversarial_images, attack_markdown, suite
from feature_unlearn.unlearn.zoo import load_generator_with_meta


def _load_run(run: Path, trust_code: bool = False) -> tuple[nn.Module, ModelRecord, nn.Module, LatentGuard]:
    g, meta = load_generator_with_meta(run, trust_code)
    record = meta.record
    if record.guard is None or record.base_model is None:
        raise UserError(
            f"{run}: not a fit run (its generator.json has no guard/base_model); evaluate takes a fit run directory"
        )
    f, base_meta = load_generator_with_meta(record.base_model, trust_code)
    if base_meta.sha256 != record.base_sha256:
        raise UserError(f"{run}: the base model {record.base_model!r} changed since the fit (sha256 differs)")
    guard = guard_from_record(record.guard)
    return g, record, f, guard


def inception_score(auditor: AttributeClassifier, images: torch.Tensor, head: str = "digit") -> float:
    """IS with the auditor's class head in place of Inception: exp E_x KL(p(y|x) ‖ p(y))."""
    with torch.no_grad():
        p = torch.cat([auditor(x)[head].softmax(1) for x in images.split(512)])
    py = p.mean(0, keepdim=True)
    kl = (p * (p.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1)
    return float(kl.mean().exp())


def _without(test: ImageSet, feats: list[str]) -> ImageSet:
    """The held-out images that show none of the removed features: what a perfect removal matches."""
    for feat in feats:
        test = test.without(feat)
    return test


def _references(test: Optional[ImageSet], dataset: str, feats: list[str]) -> dict[str, Optional[ImageSet]]:
    """The held-out images each FID is measured against (None: no such data for this dataset).

    ``with``: as they are; ``without``: those that show none of the removed features (an oracle's data, where
    the entangled attributes are rarer too); ``counterfactual``: the same held-out images drawn again without
    them and nothing else changed (faces only), what a removal that keeps every other attribute should match.
    """
    if test is None:
        return {"with": None, "without": None, "counterfactual": None}
    return {"with": test, "without": _without(test, feats), "counterfactual": counterfactual_test(dataset, feats)}


FID_KEYS = {"with": "fid", "without": "fid_without_feature", "counterfactual": "fid_counterfactual"}
SURE = 0.9  # the auditor's probability of its label of f's image from which a flip counts in the "sure" column


def _model_rows(
    images: dict[str, torch.Tensor], auditor: AttributeClassifier, refs: dict[str, Optional[ImageSet]], feats: list[str]
) -> dict[str, Any]:
    """Per model: every attribute's rate, and FID against each reference (``_references``).

    FID against data that still shows the feature punishes a perfect removal (the oracle scores
    worst there), so every reference is reported: a reader sees which distribution each matches.
    """
    rows: dict[str, Any] = {}
    for name, x in images.items():
        rates = attribute_rates(auditor, x)
        rows[name] = {"target_rate": {k: rates[k] for k in feats}, "rates": rates}
        for ref, key in FID_KEYS.items():
            data = refs[ref]
            rows[name][key] = fid(auditor, data.images, x) if data is not None else None
        if "digit" in auditor.cfg.heads:
            rows[name]["inception_score"] = inception_score(auditor, x)
    return rows


def _flips(
    readings_a: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    label_b: dict[str, torch.Tensor],
    skip: list[str],
    keep: torch.Tensor,
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    """Flips between images a and b, from the auditor's (labels, confidences) of a and its labels of b: over all,
    over ``keep`` (non-target rows), and over the rows of ``keep`` whose label the auditor gives a with
    probability ≥ ``SURE`` (with their share).

    A flip of an image the auditor reads at 0.5 is a coin toss, not a visible change: on mnist-dcgan the
    default fit's digit flips came three quarters from the 14% of f's digits the auditor reads below 0.8.
    """
    label_a, confidence_a = readings_a
    flips, non_target, when_sure = {}, {}, {}
    for k in label_a:
        if k in skip:
            continue
        flipped, sure = (label_a[k] != label_b[k])[keep], (confidence_a[k] >= SURE)[keep]
        flips[k] = float((label_a[k] != label_b[k]).float().mean())
        non_target[k] = float(flipped.float().mean())
        when_sure[k] = {
            "flips": float(flipped[sure].float().mean()) if sure.any() else 0.0,
            "share": float(sure.float().mean()),
        }
    return flips, non_target, when_sure


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    if cfg.attack and cfg.attack_cfg.eps <= 0:
        raise ConfigError(f"--attack-eps {cfg.attack_cfg.eps}: the attack needs a budget above 0")
    g, meta, f, guard = _load_run(cfg.run, cfg.trust_code)
    dataset, feats = str(meta.dataset), list(meta.features)
    auditor = _auditor(cfg, f, dataset, feats)
    test = train_test(dataset)[1] if dataset in DEFAULT_FEATURE else None  # a user's generator: no data, no FID
    z = latents(cfg.n, z_dim_of(f), 10_000 + cfg.seed)
    flagged = guard(z)[1]
    images = {
        "original": generate(f, z),
        "original+guard": generate(GuardedGenerator(f, guard), z, out=0),
        "unlearned": generate(g, z),
        "unlearned+guard": generate(GuardedGenerator(g, guard), z, out=0),
    }
    oracle_name = oracle_for(str(meta.base_model), feats[0]) if len(feats) == 1 else None
    if oracle_name is not None:
        try:
            oracle, _ = load_generator_with_meta(oracle_name)
            images["oracle"] = generate(oracle, latents(cfg.n, z_dim_of(oracle), 20_000 + cfg.seed))
        except UserError:
            oracle_name = None
    rows = _model_rows(images, auditor, _references(test, dataset, feats), feats)
    keep = ~flagged
    preservation = {
        "non_target_share": float(keep.float().mean()),
        "l1": float((images["unlearned"][keep] - images["original"][keep]).abs().mean()),
        "ms_ssim": float(1 - msssim_loss(images["unlearned"][keep][:2000], images["original"][keep][:2000]).mean()),
    }
    readings = auditor.readings(images["original"])  # one auditor pass over f's images serves both
    flips_all, flips_keep, flips_sure = _flips(readings, auditor.predict(images["unlearned"]), feats, keep)
    # the same image change in a random latent direction: how many labels any edit of that size flips
    before = {k: v[keep] for k, v in readings[0].items()}
    x_keep, l1 = images["original"][keep], preservation["l1"]
    random_step = random_step_flips(f, auditor, z[keep], x_keep, l1, feats, cfg.seed, before=before)
    result: dict[str, Any] = {
        "run": str(cfg.run),
        "base_model": meta.base_model,
        "features": feats,
        "kept": list(meta.guard.keep) if meta.guard else [],
        "auditor": auditor.cfg.kind,
        "n": cfg.n,
        "oracle": oracle_name,
        "models": rows,
        "preservation": preservation,
        "attribute_flips": {
            "all": flips_all,
            "non_target": flips_keep,
            "non_target_sure": flips_sure,
            "random_step": random_step,
        },
    }
    # every other attribute's rate, unlearned + guard − original (pp; a K-way one: its largest class shift)
    result["rate_shift"] = {a: round(_rate_shift(result, a), 3) for a in flips_all}
    check = None
    if cfg.image_check:
        check, figures = _image_check(cfg, f, g, guard, feats, dataset)
        result["image_check"] = {**figures, **_check_rates(check, auditor, images["unlearned+guard"], feats)}
    if cfg.attack:
        models = {"original": f, "unlearned": g, **({"oracle": oracle} if oracle_name else {})}
        result["attack"], result["_attack_images"] = _attack(cfg, models, guard, auditor, result, dataset, check)
        result["attack_models"] = list(result["attack"][feats[0]]["replay"])
    return result


def _auditor(cfg: EvalConfig, f: nn.Module, dataset: str, feats: list[str]) -> AttributeClassifier:
    """--auditor (zoo name or a user's factory), else the zoo auditor; never the run's labeller."""
    name = cfg.auditor or (classifier_for(dataset, "auditor") if dataset in DEFAULT_FEATURE else None)
    if name is None:
        raise ConfigError(f"--auditor: {cfg.run} was fitted on a user's generator; give the judge to grade it with")
    if name == labeller_of_run(cfg.run, dataset):
        raise ConfigError(f"--auditor {name!r}: it is the run's labeller; judge with a detector that did not train it")
    return load_detector(name, cfg.trust_code, f, feats[0], cfg.seed)


def _labeller(cfg: EvalConfig, f: nn.Module, dataset: str, feature: str) -> AttributeClassifier:
    """The classifier the fit was driven by (run.json's option, else the zoo's labeller): the attacker."""
    return load_detector(labeller_of_run(cfg.run, dataset), cfg.trust_code, f, feature, cfg.seed)


def _image_check(
    cfg: EvalConfig, f: nn.Module, g: nn.Module, guard: LatentGuard, feats: list[str], dataset: str
) -> tuple[ImageCheck, dict[str, Any]]:
    """--image-check: the check export ships (distilled once into the run directory), and its figures."""
    sha = sha256_file(cfg.run / "generator.safetensors")
    labeller = labeller_of_run(cfg.run, dataset)
    return image_check_for_run(cfg.run, f, g, guard, tuple(feats), labeller, sha, trust_code=cfg.trust_code)


def _check_rates(check: ImageCheck, auditor: AttributeClassifier, x: torch.Tensor, feats: list[str]) -> dict[str, Any]:
    """What the check does to unlearned + guard's random images: flags, and the residual among those it passes."""
    with torch.no_grad():
        flagged = torch.cat([check(chunk)[0] for chunk in x.split(512)])
    pred = auditor.predict(x[~flagged])
    return {
        "flag_rate": float(flagged.float().mean()),
        "passed": int((~flagged).sum()),
        "positives_passed": {f: int(pred[f].sum()) for f in feats},
        "residual_after_check": {f: float(pred[f].float().mean()) for f in feats},
    }


def _attack(
    cfg: EvalConfig,
    models: dict[str, nn.Module],
    guard: LatentGuard,
    auditor: AttributeClassifier,
    result: dict[str, Any],
    dataset: str,
    check: Optional[ImageCheck] = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The attack suite per removed feature (``result``: the evaluation so far), and a grid of adversarial images."""
    guarded = GuardedGenerator(models["unlearned"], guard)
    gens: dict[str, Model] = {"original": models["original"], "unlearned+guard": lambda z: guarded(z)[0]}
    if check is not None:
        gens["unlearned+guard+check"] = Defended(gens["unlearned+guard"], check)
    if "oracle" in models:
        gens["oracle"] = models["oracle"]
    labeller = _labeller(cfg, models["original"], dataset, result["features"][0])
    out: dict[str, Any] = {}
    grid = torch.empty(0)
    n = result["n"]
    for feat in result["features"]:
        hits = {name: (round(result["models"][name]["target_rate"][feat] * n), n) for name in result["models"]}
        if check is not None:
            c = result["image_check"]
            hits["unlearned+guard+check"] = (c["positives_passed"][feat], c["passed"])
        hits = {name: hits[name] for name in gens}
        out[feat], found = suite(gens, labeller, auditor, feat, z_dim_of(models["original"]), cfg.attack_cfg, hits)
        if grid.numel() == 0:
            grid = adversarial_images(gens, found)
    return out, grid


def markdown(result: dict[str, Any]) -> str:
    feats = result["features"]
    has_is = "inception_score" in result["models"]["original"]
    head = "| model | " + " | ".join(f"{f} rate" for f in feats) + " | FID | FID without the feature | "
    head += "FID vs the same images without it |"
    lines = [
        f"# Evaluation of {result['run']} (auditor, {result['n']} samples)",
        "",
        "FID is measured in the auditor's feature space against held-out data; against the held-out data",
        "that does not show the removed feature (an oracle's data: attributes entangled with it are rarer",
        "there too); and against the same held-out images drawn again without it, nothing else changed",
        "(rendered faces only): the distribution a removal that keeps every other attribute should match.",
        "",
        head + (" IS |" if has_is else ""),
        "|" + "---|" * (len(feats) + 4 + has_is),
    ]
    for name, row in result["models"].items():
        cells = [f"{row['target_rate'][f]:.4f}" for f in feats]
        cells += ["—" if row.get(k) is None else f"{row[k]:.3f}" for k in FID_KEYS.values()]
        if "inception_score" in row:
            cells.append(f"{row['inception_score']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *_rates_markdown(result), *_check_markdown(result)]
    p = result["preservation"]
    lines += [
        "",
        f"Preservation on non-target latents ({p['non_target_share']:.1%} of samples): "
        f"mean |g − f| = {p['l1']:.4f}, MS-SSIM = {p['ms_ssim']:.4f}.",
        "",
        f"Flips compare the auditor's labels of f(z) and g(z); the last column counts only the non-target images "
        f"whose label the auditor gives f's image with probability ≥ {SURE} (their share in brackets).",
        *_random_step_note(result),
        "",
        "| attribute | kept (--keep) | rate shift, unlearned+guard (pp) | flips (all) | flips (non-target) "
        "| flips (non-target, auditor sure) | flips, random latent step (non-target) |",
        "|---|---|---|---|---|---|---|",
    ]
    flips = result["attribute_flips"]
    for k, v in flips["all"].items():
        kept = "yes" if _base_attr(k) in result.get("kept", []) else "no"
        sure = flips["non_target_sure"][k]
        step = flips.get("random_step", {}).get("flips", {}).get(k)
        lines.append(
            f"| {k} | {kept} | {_rate_shift(result, k):+.2f} | {v:.4f} | {flips['non_target'][k]:.4f} "
            f"| {sure['flips']:.4f} ({sure['share']:.1%}) | {'—' if step is None else f'{step:.4f}'} |"
        )
    for feat, suite_result in result.get("attack", {}).items():
        lines += ["", *attack_markdown(suite_result, feat)]
    return "\n".join(lines) + "\n"


def _random_step_note(result: dict[str, Any]) -> list[str]:
    step = result["attribute_flips"].get("random_step")
    if step is None:  # an evaluation.json written before the reference existed
        return []
    return [
        f"The last column is the reference: f's non-target images moved by a latent step in a random direction "
        f"({step['radius']:.3f} long, mean image change {step['l1']:.4f}, sized to match g's), so that a flip rate "
        "near it says the images sit where any edit of that size flips labels.",
    ]


def _check_markdown(result: dict[str, Any]) -> list[str]:
    """The image check's figures (evaluate --image-check), when there is one."""
    c = result.get("image_check")
    if not c:
        return []
    residual = ", ".join(f"{f} {v:.4f}" for f, v in c["residual_after_check"].items())
    return [
        "",
        f"Image check (distilled from {c['labeller']}; threshold at recall {c['recall']:.3f} of its positives, "
        f"false-positive rate {c['false_positive_rate']:.3f} on held-out images of the original): it flags "
        f"{c['flag_rate']:.2%} of unlearned + guard's random images; among those it passes the auditor sees "
        f"{residual}.",
    ]


def _base_attr(name: str) -> str:
    """'digit=3' -> 'digit' (rates of K-way attributes are reported per class)."""
    return name.split("=", 1)[0]


def _rate_shift(result: dict[str, Any], attr: str) -> float:
    """How far unlearned + guard moved an attribute's rate from the original's, in percentage points."""
    models = result["models"]
    if attr not in models["original"]["rates"]:  # a K-way attribute: the largest class shift
        classes = [a for a in models["original"]["rates"] if _base_attr(a) == attr]
        return max((_rate_shift(result, a) for a in classes), key=abs, default=0.0)
    return 100 * (models["unlearned+guard"]["rates"][attr] - models["original"]["rates"][attr])


def _rates_markdown(result: dict[str, Any]) -> list[str]:
    """Every attribute's rate per model, and how far unlearned + guard moved it from the original."""
    models = list(result["models"])
    attrs = list(result["models"]["original"]["rates"])
    lines = [
        "| attribute (auditor rate) | " + " | ".join(models) + " | unlearned+guard − original (pp) |",
        "|---|" + "---|" * (len(models) + 1),
    ]
    for a in attrs:
        rates = [result["models"][m]["rates"][a] for m in models]
        mark = " (kept)" if _base_attr(a) in result.get("kept", []) else ""
        lines.append(f"| {a}{mark} | " + " | ".join(f"{r:.4f}" for r in rates) + f" | {_rate_shift(result, a):+.2f} |")
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from feature_unlearn.unlearn.io import atomic_write

    names = list(result["models"])
    attrs = [a for a in result["models"]["original"]["rates"] if "=" not in a]  # binary attributes
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(attrs)), 3.4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [result["models"][name]["rates"][a] for a in attrs]
        ax.bar([x + width * i for x in range(len(attrs))], vals, width=width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(attrs))], attrs, rotation=15)
    ax.set_ylabel("rate (auditor)")
    ax.set_title(f"every attribute, removed: {', '.join(result['features'])}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def run_evaluate(cfg: EvalConfig, json_path: Path | None = None) -> dict[str, Any]:
    from feature_unlearn.unlearn.io import write_json, write_text

    result = evaluate(cfg)
    out = cfg.out or cfg.run
    adversarial = result.pop("_attack_images", None)
    write_json(json_path or out / "evaluation.json", result)
    write_text(out / "evaluation.md", markdown(result))
    plot(result, out / "evaluation.png")
    if adversarial is not None:  # rows: original, unlearned + guard, oracle
        save_png(
            grid(adversarial, nrow=len(adversarial) // len(result["attack_models"]), pad=2),
            out / "evaluation_attack.png",
            scale=3,
        )
    return result
