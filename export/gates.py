"""Quality gates for a reduced-precision artifact: does it still make the same images, as judged?

Pixel tolerances (``export.validate``) say how far images moved; these gates say whether what
they show moved. The dataset's zoo auditor (never the labeller that drove a fit) grades the
fp32 artifact and the reduced one on the same prior latents:

- the residual rate of each removed feature (every binary attribute for a plain zoo model) within
  ± ``spec.gate_rate_pp`` percentage points of fp32's;
- FID against the held-out data in the auditor's feature space within ± ``spec.gate_fid_rel`` of fp32's.

A generator of a user's own dataset has no auditor here: the gates are reported as not run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.source import Source
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.unlearn.data import train_test
from feature_unlearn.unlearn.metrics import attribute_rates, fid
from feature_unlearn.unlearn.pretrain.recipes import DEFAULT_FEATURE, classifier_for
from feature_unlearn.unlearn.zoo import load_classifier

Images = Callable[[np.ndarray], np.ndarray]  # z [N, z_dim] -> uint8 images [N, H, W, C]
GATE_SEED = 40_000


class QualityGateError(ExportError):
    """The reduced-precision artifact changes what its images show beyond the gate."""


def _float_images(images: Images, z: np.ndarray, batch: int = 512) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1], from the artifact's own uint8 output."""
    chunks = [images(z[i : i + batch]) for i in range(0, len(z), batch)]
    x = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _pixels(fp32: torch.Tensor, reduced: torch.Tensor) -> dict[str, Any]:
    """Grey-level differences from the fp32 graph on the gate's latents (validation sees only a few hundred)."""
    steps = (reduced - fp32).abs().mul(127.5).round()  # both came from uint8: whole grey levels
    worst = steps.flatten(1).amax(1)
    return {"max": int(steps.max()), "mean": round(float(steps.mean()), 4), "images_over_4": int((worst > 4).sum())}


def _judged(source: Source) -> list[str] | None:
    dataset = source.meta.record.dataset
    if dataset not in DEFAULT_FEATURE:
        return None
    return list(dict.fromkeys(source.guard.features)) if source.guard is not None else []


def measure(fp32: Images, reduced: Images, source: Source, z_dim: int, n: int, precision: str) -> dict[str, Any]:
    """Rates and FID of both artifacts on ``n`` shared latents, judged by the auditor; no decision yet."""
    features = _judged(source)
    if features is None:
        return {"run": False, "why": f"dataset {source.meta.record.dataset!r} has no zoo auditor"}
    dataset = str(source.meta.record.dataset)
    auditor_name = classifier_for(dataset, "auditor")
    auditor = load_classifier(auditor_name).eval()
    z = np.random.default_rng(GATE_SEED).standard_normal((n, z_dim), dtype=np.float32)
    real = train_test(dataset)[1].images
    images = {"fp32": _float_images(fp32, z), precision: _float_images(reduced, z)}
    if images["fp32"].shape[1:] != real.shape[1:]:
        shape = list(images["fp32"].shape[1:])
        return {"run": False, "why": f"images {shape} are not the {dataset} auditor's {list(real.shape[1:])}"}
    binary = [k for k, c in auditor.cfg.heads.items() if c == 2]
    judged = [f for f in features if f in binary] or binary  # a feature the auditor lacks: every attribute
    out: dict[str, Any] = {"run": True, "auditor": auditor_name, "n": n, "features": judged}
    out["pixels"] = _pixels(images["fp32"], images[precision])
    for label, x in images.items():
        rates = attribute_rates(auditor, x)
        out[label] = {"rates": {k: round(100 * rates[k], 3) for k in judged}, "fid": round(fid(auditor, real, x), 4)}
    return out


def decide(figures: dict[str, Any], precision: str, spec: ExportSpec) -> dict[str, Any]:
    """Add the verdict to ``figures``; raise ``QualityGateError`` (one line, the numbers) when a gate fails."""
    if not figures.get("run"):
        return figures
    base, low = figures["fp32"], figures[precision]
    shifts = {k: round(low["rates"][k] - base["rates"][k], 3) for k in base["rates"]}
    fid_rel = low["fid"] / base["fid"] - 1 if base["fid"] > 0 else 0.0
    figures |= {"rate_shift_pp": shifts, "fid_change": round(fid_rel, 4)}
    fails = [
        f"{k} rate {base['rates'][k]:.2f}% -> {low['rates'][k]:.2f}%"
        for k, d in shifts.items()
        if abs(d) > spec.gate_rate_pp
    ]
    if abs(fid_rel) > spec.gate_fid_rel:
        fails.append(f"FID {base['fid']:.3f} -> {low['fid']:.3f} ({100 * fid_rel:+.1f}%)")
    figures["passed"] = not fails
    if fails:
        raise QualityGateError(
            f"--precision {precision}: quality gate failed on {figures['n']} latents judged by {figures['auditor']}: "
            f"{'; '.join(fails)} (allowed ±{spec.gate_rate_pp:g} pp, FID ±{100 * spec.gate_fid_rel:g}%)"
        )
    return figures
