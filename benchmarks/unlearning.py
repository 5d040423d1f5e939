"""The unlearning table: fit each zoo generator on its default feature, grade it with the auditor.

Per generator: ``unlearn.fit.run.fit`` (default options unless the config overrides them), then
``unlearn.evaluate.run_evaluate`` with the PGD attack; the run directories (with their
evaluation.json/md/png) stay under ``cfg.work`` for inspection.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.models import shipped
from feature_unlearn.unlearn.attack import AttackConfig
from feature_unlearn.unlearn.evaluate import EvalConfig, run_evaluate
from feature_unlearn.unlearn.fit import FitConfig
from feature_unlearn.unlearn.fit.run import fit
from feature_unlearn.unlearn.zoo import DEFAULT_FEATURE


def fit_config(name: str, cfg: BenchConfig) -> FitConfig:
    feature = DEFAULT_FEATURE[name.split("-")[0]]
    base = FitConfig(out=cfg.work / name, model=name, features=(feature,), force=True, seed=cfg.seed)
    changes = dict(cfg.unlearn_overrides)
    if cfg.unlearn_steps is not None:
        changes["steps"] = cfg.unlearn_steps
    return dataclasses.replace(base, **changes)


def summarize(name: str, fcfg: FitConfig, metrics: dict[str, Any], ev: dict[str, Any], fit_s: float) -> dict[str, Any]:
    feat = ev["features"][0]
    models = ev["models"]
    rate = {k: v["target_rate"][feat] for k, v in models.items()}
    fid = {k: v["fid"] for k, v in models.items()}
    flips = ev["attribute_flips"]["non_target"]
    worst = max(flips.items(), key=lambda kv: kv[1]) if flips else (None, None)
    after = metrics["labeller_rate_after"][feat]
    return {
        "model": name, "feature": feat, "n": ev["n"], "oracle": ev["oracle"], "target_rate": rate, "fid": fid,
        "worst_flip": {"attribute": worst[0], "rate": worst[1]}, "flips_non_target": flips,
        "pgd_success": {k: v[feat] for k, v in ev.get("attack", {}).get("success", {}).items()},
        "attack": {k: ev["attack"][k] for k in ("eps", "steps", "starts")} if "attack" in ev else None,
        "preservation": ev["preservation"],
        "fit": {"seconds": round(fit_s, 1), "steps": metrics["steps"], "rounds": metrics["rounds"],
                "steps_per_s": metrics["steps_per_second"], "labeller_rate_before": metrics["labeller_rate_before"][feat],
                "labeller_rate_after": after, "goal": fcfg.goal, "goal_reached": after <= fcfg.goal},
        "run": str(fcfg.out),
    }  # fmt: skip


def unlearn_one(name: str, cfg: BenchConfig) -> dict[str, Any]:
    fcfg = fit_config(name, cfg)
    t = time.perf_counter()
    metrics = fit(fcfg)
    fit_s = time.perf_counter() - t
    acfg = AttackConfig(steps=cfg.attack_steps, starts=cfg.attack_starts)
    ev = run_evaluate(EvalConfig(run=fcfg.out, n=cfg.eval_n, seed=cfg.seed, attack=True, attack_cfg=acfg))
    return summarize(name, fcfg, metrics, ev, fit_s)


def run_unlearning(cfg: BenchConfig) -> dict[str, Any]:
    rows, skipped = [], []
    for name in cfg.unlearn_models:
        if not shipped(name):
            skipped.append({"model": name, "reason": "zoo weights not shipped yet"})
            continue
        print(f"unlearning: {name}", flush=True)
        try:
            rows.append(unlearn_one(name, cfg))
        except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others' rows
            skipped.append({"model": name, "reason": f"{type(exc).__name__}: {exc}"[:600]})
    return {"rows": rows, "skipped": skipped, "eval_n": cfg.eval_n,
            "attack": {"eps": AttackConfig().eps, "steps": cfg.attack_steps, "starts": cfg.attack_starts}}  # fmt: skip
