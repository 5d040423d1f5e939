"""Choose the target vector and threshold by measurement.

For each generator: collect labelled samples with the labeller (as the fit does), fit every
direction × threshold rule, and report on the collected set (precision, recall, flagged share)
and, on fresh latents graded by the *auditor*, the residual target rate of the original behind
the guard alone (shift mode) — a cheap preview of how much the rule can remove, and of how many
latents it moves (the price in fidelity).

    python benchmarks/detectors.py --model mnist-vae --model faces-dcgan --out benchmarks/detectors.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from feature_unlearn.unlearn.collect import collect_with_labeller
from feature_unlearn.unlearn.guard import GuardedGenerator, LatentGuard
from feature_unlearn.unlearn.io import write_text
from feature_unlearn.unlearn.metrics import generate, latents
from feature_unlearn.unlearn.models import z_dim_of
from feature_unlearn.unlearn.target import DIRECTIONS, fit_detector
from feature_unlearn.unlearn.zoo import DEFAULT_FEATURE, load_classifier, load_generator_with_meta

RULES = [("pooled", 0.0), ("midpoint", 0.0), ("f1", 0.0), ("recall", 0.9), ("recall", 0.95)]


def rows_for(model: str, n_collect: int, n_eval: int) -> list[dict[str, object]]:
    f, meta = load_generator_with_meta(model)
    dataset = str(meta.record.dataset)
    feature = DEFAULT_FEATURE[dataset]
    labeller, auditor = load_classifier(f"{dataset}-labeller"), load_classifier(f"{dataset}-auditor")
    c = collect_with_labeller(f, labeller, (feature,), n_collect, 0, f"{dataset}-labeller")
    z_eval = latents(n_eval, z_dim_of(f), 31337)
    base = float(auditor.predict(generate(f, z_eval))[feature].float().mean())
    rows: list[dict[str, object]] = []
    for method in DIRECTIONS:
        for rule, recall in RULES:
            det = fit_detector(c.z, c.labels[feature], method, rule, recall or 0.9)
            guard = LatentGuard(det.direction, det.threshold, "shift")
            x = generate(GuardedGenerator(f, guard), z_eval, out=0)
            rate = float(auditor.predict(x)[feature].float().mean())
            name = f"{rule}{'@' + str(recall) if rule == 'recall' else ''}"
            rows.append({"model": model, "feature": feature, "direction": method, "threshold": name,
                         "precision": det.precision, "recall": det.recall, "flagged": det.flagged,
                         "original_rate": base, "guard_rate": rate})  # fmt: skip
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | feature | direction | threshold | precision | recall | flagged | auditor rate: original | original + guard |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['feature']} | {r['direction']} | {r['threshold']} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['flagged']:.3f} | {r['original_rate']:.4f} | {r['guard_rate']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--n-collect", type=int, default=5000)
    ap.add_argument("--n-eval", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/detectors.md"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [r for m in args.model for r in rows_for(m, args.n_collect, args.n_eval)]
    text = "# Detector choice (collected set: labeller; rates: auditor on fresh latents)\n\n" + table(rows)
    write_text(args.out, text)
    write_text(args.out.with_suffix(".json"), json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
