"""Fit speed (steps/s per precision and compilation mode, and 2-process DDP) and the unlearning table.

Fit speed times the real training step (``unlearn.fit.loop.Trainer``) of every configuration,
alternating them in rounds like the inference backends. DDP runs the real ``unlearn-cli fit``
under ``torchrun --standalone --nproc_per_node=2`` (gloo, one thread per process, as torchrun
sets) against one process of the same command and global batch, each figure the
``steps_per_second`` of its run.json. The unlearning table fits each zoo generator on its
default feature and grades it with the auditor (``unlearn-cli evaluate`` with the PGD attack);
the runs stay under ``--work`` for inspection.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.config import Run
from benchmarks.inference import build
from benchmarks.measure import Fn, interleave, one_line
from benchmarks.records import Ddp, Failure, FitRow, FitRun, FitSpeed, Unlearning, UnlearnRow
from feature_unlearn.unlearn.byo import is_spec
from feature_unlearn.unlearn.configs import AttackConfig, EvalConfig
from feature_unlearn.unlearn.device import maybe_compile, resolve_runtime
from feature_unlearn.unlearn.fit import FitConfig
from feature_unlearn.unlearn.fit.distributed import Dist
from feature_unlearn.unlearn.fit.loop import Trainer
from feature_unlearn.unlearn.fit.loss import UnlearnLoss
from feature_unlearn.unlearn.fit.sampler import LatentPool
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.io import read_run
from feature_unlearn.unlearn.models import z_dim_of
from feature_unlearn.unlearn.pretrain.recipes import DEFAULT_FEATURE, RECIPES, classifier_for
from feature_unlearn.unlearn.zoo import load_generator

PRECISIONS = (("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32"), ("compile", "bf16"))


def fit_configs(cuda: bool) -> list[tuple[str, str, str]]:
    """(device, mode, precision): the CPU set always; on a GPU its set with fp16 too."""
    rows = [("cpu", m, p) for m, p in PRECISIONS]
    return rows + ([("cuda", m, p) for m, p in (*PRECISIONS, ("eager", "fp16"), ("compile", "fp16"))] if cuda else [])


def trainer_step(model: str, device: str, mode: str, precision: str, batch: int) -> Fn:
    """One real training step of ``model`` per call (a fixed guard; latents from a pool on the CPU, as the fit's)."""
    torch.manual_seed(0)
    rt = resolve_runtime(device, precision)
    f = load_generator(model).requires_grad_(False).to(rt.device)
    g = copy.deepcopy(f).requires_grad_(True).eval()
    guard = LatentGuard(torch.eye(z_dim_of(f))[0], 1.0).to(rt.device)
    pool, steps = LatentPool(guard, 8192, seed=0, round_index=0), itertools.count()
    opt = torch.optim.Adam(g.parameters())
    trainer = Trainer(
        f, g, maybe_compile(g, mode == "compile"), guard, UnlearnLoss(1.0), opt, rt.grad_scaler(), rt, Dist()
    )

    def step() -> object:
        out = trainer.step(pool, next(steps), batch, 0.5, 1e-4)
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        return out

    return step


def fit_speed(cfg: Run) -> FitSpeed:
    """Steps/s of every configuration, alternating in rounds; then DDP (``unlearn-cli fit`` under torchrun)."""
    s = cfg.s
    configs = {" ".join(c): c for c in fit_configs(torch.cuda.is_available())}
    fns, failed = build({k: partial(trainer_step, s.fit_model, *c, s.fit_batch) for k, c in configs.items()})
    steps, rounds = (s.fit_steps, s.fit_steps), min(s.rounds, s.fit_steps)
    timings, errors = interleave(fns, s.fit_warmup, 0, steps, rounds, cfg.seed)
    rows = []
    for name, c in configs.items():
        if t := timings.get(name):  # over all timed steps, as a run's steps_per_second counts them
            rows.append(FitRow(*c, round(len(t.samples) / sum(t.samples), 3), round(sum(t.warmup), 2)))
        else:
            rows.append(FitRow(*c, error=(failed | errors)[name]))
        print(f"fit {name}: {rows[-1].steps_per_s or rows[-1].error} steps/s", flush=True)
    ddp, ddp_error = None, None
    if cfg.runs("ddp"):
        try:
            ddp = run_ddp(cfg)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            ddp_error = one_line(exc)
    return FitSpeed(s.fit_model, s.fit_batch, s.fit_steps, s.fit_warmup, tuple(rows), ddp, ddp_error)


def _fit_run(launcher: list[str], out: Path, cfg: Run, *extra: str) -> float:
    """``unlearn-cli fit`` under ``launcher``: the steps/s its run.json reports (training time, probes included)."""
    s = cfg.s
    args = ["--model", s.fit_model, "--out", str(out), "--steps", str(s.ddp_steps), "--batch", str(s.fit_batch)]
    args += ["--steps-per-round", str(s.ddp_steps), "--n-collect", "1000", "--device", "cpu", "--force", *extra]
    proc = subprocess.run(
        [*launcher, "feature_unlearn.cli", "fit", *args], capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fit under {launcher[-2]} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return float(read_run(out).metrics["steps_per_second"])


def run_ddp(cfg: Run) -> Ddp:
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        one = _fit_run([sys.executable, "-m"], Path(tmp, "one"), cfg, "--threads", str(cfg.threads))
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
        two = _fit_run(torchrun, Path(tmp, "two"), cfg)
    return Ddp(cfg.s.fit_model, cfg.s.ddp_steps, cfg.s.fit_batch, cfg.threads, one, two)


def unlearn_one(name: str, cfg: Run) -> UnlearnRow:
    """``unlearn-cli fit`` on the dataset's default feature, then ``unlearn-cli evaluate --attack`` with the auditor."""
    from feature_unlearn.unlearn.evaluate import run_evaluate
    from feature_unlearn.unlearn.fit.run import fit

    dataset, s = RECIPES[name].dataset, cfg.s
    features, labeller = (DEFAULT_FEATURE[dataset],), classifier_for(dataset, "labeller")
    fcfg = FitConfig(
        out=cfg.work_dir / name,
        model=name,
        features=features,
        labeller=labeller,
        seed=cfg.seed,
        force=True,
        robust=cfg.robust,
    )
    fcfg = dataclasses.replace(fcfg, **dict(s.fit_overrides))
    started = time.perf_counter()
    metrics = fit(fcfg)
    seconds = round(time.perf_counter() - started, 1)
    attack = AttackConfig(steps=s.attack_steps, starts=s.attack_starts)
    auditor = classifier_for(dataset, "auditor")
    ev = run_evaluate(
        EvalConfig(fcfg.out, s.eval_n, cfg.seed, attack=True, attack_cfg=attack, auditor=auditor, image_check=True)
    )  # the suite grades the image check export --image-check would ship, with an adaptive attack
    feat, models, after = features[0], ev["models"], metrics["labeller_rate_after"][features[0]]
    run = FitRun(seconds, metrics["steps"], metrics["rounds"], fcfg.goal, after <= fcfg.goal)
    rates = {k: v["target_rate"][feat] for k, v in models.items()}
    suite = ev["attack"][feat]  # the primary verdict: L∞ PGD led by the labeller, judged by the auditor
    pgd, pgd_l2 = suite["pgd"]["linf"][suite["verdict"]], suite["pgd"]["l2"][suite["verdict"]]
    fid, flips = {k: v["fid"] for k, v in models.items()}, ev["attribute_flips"]["non_target"]
    fid_without = {k: v["fid_without_feature"] for k, v in models.items()}
    counterfactual = {k: v["fid_counterfactual"] for k, v in models.items() if v.get("fid_counterfactual") is not None}
    return UnlearnRow(
        name, feat, ev["oracle"], rates, fid, flips, pgd, run, str(fcfg.out), fid_without, ev["rate_shift"],
        tuple(ev["kept"]), counterfactual, pgd_l2, suite["replay"],
    )  # fmt: skip


def run_unlearning(cfg: Run) -> Unlearning:
    rows, failures = [], []
    for name in cfg.s.unlearn_models or cfg.model_names:
        if is_spec(name):
            failures.append(
                Failure(
                    name,
                    "a user's generator: the unlearning table fits zoo generators with the zoo labeller and auditor",
                )
            )
            continue
        print(f"unlearning: {name}", flush=True)
        try:
            rows.append(unlearn_one(name, cfg))
        except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others' rows
            failures.append(Failure(name, one_line(exc)))
    attack = {"eps": AttackConfig().eps, "steps": cfg.s.attack_steps, "starts": cfg.s.attack_starts}
    return Unlearning(cfg.s.eval_n, attack, tuple(rows), tuple(failures))
