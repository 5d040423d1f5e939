"""``unlearn-cli fit``: collect, estimate the target vector, fine-tune in rounds, save and report.

The paper's loop: "repeat until the generator no longer produces the target feature". Round 0
labels samples of the original f; every later round re-collects on the current g, fits a new
direction on what g still shows, and adds it to the guard, until the labeller's rate on a fixed
probe set reaches ``goal`` or the step budget runs out.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from feature_unlearn import __version__
from feature_unlearn.unlearn import byo
from feature_unlearn.unlearn.artifacts import FORMAT_VERSION, GuardRecord, ModelRecord, RunRecord
from feature_unlearn.unlearn.collect import (
    Collection,
    collect_with_labeller,
    collection_from_labels,
    label_with_classifier,
)
from feature_unlearn.unlearn.configs import AttackConfig
from feature_unlearn.unlearn.device import Runtime, maybe_compile, resolve_runtime
from feature_unlearn.unlearn.errors import ConfigError, UserError
from feature_unlearn.unlearn.fit.anchor import KeptAnchor
from feature_unlearn.unlearn.fit.config import FitConfig
from feature_unlearn.unlearn.fit.distributed import Dist, barrier, broadcast_tensor, init_dist
from feature_unlearn.unlearn.fit.loop import LR_SCHEDULES, Trainer, scheduled_lr
from feature_unlearn.unlearn.fit.loss import UnlearnLoss
from feature_unlearn.unlearn.fit.margin import N_LATENTS as MARGIN_LATENTS
from feature_unlearn.unlearn.fit.margin import choose_margin, kept_shifts
from feature_unlearn.unlearn.fit.robust import BUFFER, RobustMiner
from feature_unlearn.unlearn.fit.sampler import LatentPool
from feature_unlearn.unlearn.fit.state import FitState, load_state, save_state
from feature_unlearn.unlearn.guard import LatentGuard, guard_from_record
from feature_unlearn.unlearn.io import load_checkpoint, save_checkpoint, write_json
from feature_unlearn.unlearn.keep import KEEP_AUTO, MIN_RESIDUAL, KeptSpace, oblique_shift, resolve_keep
from feature_unlearn.unlearn.metrics import generate, latents
from feature_unlearn.unlearn.models import AttributeClassifier, z_dim_of
from feature_unlearn.unlearn.pretrain.recipes import DEFAULT_FEATURE, classifier_for
from feature_unlearn.unlearn.target import direction, fit_detector
from feature_unlearn.unlearn.zoo import ModelMeta, load_generator_with_meta

MIN_POSITIVES = 20  # a later round adds a direction only from at least this many positives


def probe_rates(g: nn.Module, labeller: AttributeClassifier, features: list[str], z: torch.Tensor) -> dict[str, float]:
    pred = labeller.predict(generate(g, z))
    return {f: float(pred[f].float().mean()) for f in features}


def _features(cfg: FitConfig, meta: ModelMeta, labeller: AttributeClassifier) -> list[str]:
    default = DEFAULT_FEATURE.get(str(meta.record.dataset))
    if not cfg.features and default is None:
        raise ConfigError(f"--feature: {cfg.model} has no default feature; name the feature to remove")
    feats = list(cfg.features) or [str(default)]
    for f in feats:
        if labeller.cfg.heads.get(f) != 2:
            known = ", ".join(k for k, c in labeller.cfg.heads.items() if c == 2)
            raise ConfigError(f"--feature {f!r}: not a binary attribute the labeller knows (choose from {known})")
    if len(set(feats)) != len(feats):
        raise ConfigError("--feature: the same feature is given twice")
    return feats


def _first_collection(
    cfg: FitConfig, f: nn.Module, labeller: AttributeClassifier, feats: list[str], name: str
) -> Collection:
    if cfg.labels is None:
        return collect_with_labeller(f, labeller, tuple(feats), cfg.n_collect, cfg.seed, name)
    if len(feats) != 1:
        raise ConfigError("--labels holds one feature's positives: give exactly one --feature")
    return collection_from_labels(cfg.labels, feats[0], z_dim_of(f))


def _add_detectors(state: FitState, c: Collection, cfg: FitConfig, kept: KeptSpace | None) -> None:
    """Guard rows from a collection; round 0 (``kept`` given) refuses a target parallel to kept directions."""
    first = kept is not None
    basis = torch.tensor(state.kept_basis, dtype=torch.float32).reshape(-1, c.z.shape[1])
    for feat, y in c.labels.items():
        if not first and int(y.sum()) < MIN_POSITIVES:
            continue
        det = fit_detector(
            c.z, y, cfg.direction, cfg.threshold, cfg.target_recall, cfg.flag_budget if first else cfg.round_flag_budget
        )
        v, residual = oblique_shift(det.direction, basis)
        if kept is not None:
            v = kept.shift(det.direction, feat)
        elif residual < MIN_RESIDUAL:
            continue  # a later round's direction inside the kept subspace: removing it would move them
        state.directions.append(det.direction.tolist())
        state.thresholds.append(det.threshold)
        state.shifts.append(v.tolist())
        state.row_features.append(feat)
        state.detectors.append(
            {"round": state.round, "feature": feat, **det.as_dict(), "direction": None, "kept_residual": residual}
        )
    state.collections.append({"round": state.round, **c.stats()})


def _check_anchor(cfg: FitConfig, keep: list[str]) -> None:
    if cfg.keep_weight > 0 and not keep:
        raise ConfigError(
            f"--keep-weight {cfg.keep_weight}: no attribute is kept (--keep {' '.join(cfg.keep) or 'none'}), "
            "so there is nothing to anchor; give --keep ATTR or leave --keep-weight at 0"
        )


def _round0(cfg: FitConfig, f: nn.Module, labeller: AttributeClassifier, state: FitState, name: str) -> None:
    """Collect on f, estimate the kept attributes' directions, then the guard rows."""
    state.keep = list(resolve_keep(cfg.keep, state.features, labeller))
    _check_anchor(cfg, state.keep)
    c = _first_collection(cfg, f, labeller, state.features, name)
    kept = KeptSpace.estimate(c.z, _kept_labels(f, labeller, c, state.keep), labeller.cfg.heads, tuple(state.keep))
    dropped: list[str] = []
    if KEEP_AUTO in cfg.keep:
        kept, dropped = kept.prune({feat: direction(c.z, y, cfg.direction)[0] for feat, y in c.labels.items()})
        state.keep = list(kept.attributes)
    _check_anchor(cfg, state.keep)  # auto may have dropped every attribute
    state.kept_basis = kept.basis.tolist()
    _add_detectors(state, c, cfg, kept)
    if dropped:
        state.collections[-1]["keep_dropped"] = dropped  # auto: almost parallel to a removed feature
    if kept.attributes:
        state.collections[-1]["keep_cosines"] = {
            feat: kept.cosines(torch.tensor(u)) for feat, u in zip(state.row_features, state.directions, strict=True)
        }


def _kept_labels(
    f: nn.Module, labeller: AttributeClassifier, c: Collection, keep: list[str]
) -> dict[str, torch.Tensor]:
    """The labeller's labels of the kept attributes on the collected latents (person labels hold only the feature)."""
    return label_with_classifier(f, c.z, labeller, tuple(keep)) if keep else {}


def _seal_import(cfg: FitConfig, f: nn.Module, meta: ModelMeta) -> tuple[nn.Module, ModelMeta, str]:
    """A --model factory with --weights is sealed into the run (base.*), so later commands can rebuild f."""
    if not (byo.is_spec(cfg.model) and cfg.weights is not None):
        return f, meta, cfg.model
    stem = (cfg.out / "base").resolve()
    save_checkpoint(stem, f.state_dict(), meta.record)
    f, meta = load_generator_with_meta(stem, trust_code=True)  # the sealed file's sha256 is the one recorded
    return f, meta, str(stem)


def _check_robust(cfg: FitConfig, f: nn.Module) -> None:
    """--robust differentiates an attack through the generator: it needs a budget and a gradient path."""
    if cfg.robust_eps <= 0:
        raise ConfigError(f"--robust-eps {cfg.robust_eps}: the mining attack needs a budget above 0 (or --no-robust)")
    z = torch.randn(2, z_dim_of(f), requires_grad=True)
    x = f(z)
    if not x.requires_grad or torch.autograd.grad(x.sum(), z, allow_unused=True)[0] is None:
        raise ConfigError(
            f"--robust: {cfg.model}'s forward has no gradient path from z to the image (detached?); "
            "pass --no-robust to fit without the attack"
        )


def _trainable(g: nn.Module, cfg: FitConfig) -> list[nn.Parameter]:
    """g's parameters the fit trains: all but a learned prior's (``g.prior``) unless --train-prior.

    The paper fine-tunes the decoder; a learned prior (a VAE's flow) is how latents are drawn, and moving
    it moves every latent's image at once (measured on mnist-vae: see FitConfig.train_prior).
    """
    prior = getattr(g, "prior", None)
    if isinstance(prior, nn.Module) and not cfg.train_prior:
        prior.requires_grad_(False)
    params = [p for p in g.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"--model {cfg.model}: the generator has no trainable parameters outside its prior")
    return params


def _labeller(cfg: FitConfig, f: nn.Module, meta: ModelMeta) -> tuple[str, AttributeClassifier]:
    """--labeller (zoo name or a user's factory), else the zoo labeller of the generator's dataset."""
    dataset = meta.record.dataset
    name = cfg.labeller or (classifier_for(dataset, "labeller") if dataset in DEFAULT_FEATURE else None)
    if name is None:
        raise ConfigError(f"--labeller: {cfg.model} is not a zoo generator; give a zoo name or package.module:factory")
    return name, byo.load_detector(name, cfg.trust_code, f, cfg.features[0] if cfg.features else None, cfg.seed)


def _prepare_out(cfg: FitConfig) -> bool:
    """Check --out before any work; returns whether this run created it (so a failure removes it)."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise UserError(f"--out {cfg.out}: exists and is not a directory")
    if cfg.out.exists() and any(cfg.out.iterdir()) and not (cfg.resume or cfg.force):
        raise UserError(f"--out {cfg.out}: exists and is not empty (use --resume to continue or --force to overwrite)")
    if cfg.resume and not (cfg.out / "checkpoint.json").is_file():
        raise UserError(f"--resume: {cfg.out} holds no checkpoint.json")
    created = not cfg.out.exists()
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=cfg.out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"--out {cfg.out}: cannot write there ({exc.strerror or exc})") from None
    return created


def _discard_failed(cfg: FitConfig, created: bool) -> None:
    """A fit that failed leaves nothing behind unless there is a checkpoint to --resume from."""
    if cfg.resume or (cfg.out / "checkpoint.json").is_file():
        return
    if created:
        shutil.rmtree(cfg.out, ignore_errors=True)


def _sync_guard(state: FitState, d: Dist, rt: Runtime, margin: float) -> LatentGuard:
    u, t, v = (broadcast_tensor(x, d) for x in state.guard_tensors())
    return LatentGuard(u, t, mode="shift", shift=v, margin=margin).to(rt.device)


def fit(cfg: FitConfig) -> dict[str, Any]:
    if cfg.batch < 2 or cfg.steps < 1 or cfg.steps_per_round < 1 or not 0 < cfg.target_frac < 1:
        raise ConfigError("--batch ≥ 2, --steps ≥ 1, --steps-per-round ≥ 1 and 0 < --target-frac < 1 are required")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"--lr-schedule {cfg.lr_schedule!r}: choose from {', '.join(LR_SCHEDULES)}")
    resolve_runtime(cfg.device, cfg.precision)  # refuse a bad --device/--precision before the process group
    d = init_dist(cfg.device)
    rt = resolve_runtime(cfg.device, cfg.precision, d.local_rank)  # each torchrun process on its own GPU
    if cfg.batch % d.world:
        raise ConfigError(f"--batch {cfg.batch} must be divisible by the {d.world} processes")
    for flag, rows in (("--robust-batch", cfg.robust_batch), ("--robust-sample", cfg.robust_sample)):
        if cfg.robust and rows % d.world:  # the robust term's rows are split over the processes
            raise ConfigError(f"{flag} {rows} must be divisible by the {d.world} processes")
    created = _prepare_out(cfg) if d.main else False
    barrier(d)
    try:
        return _setup_and_train(cfg, rt, d)
    except UserError:
        if d.main:
            _discard_failed(cfg, created)
        raise


def _setup_and_train(cfg: FitConfig, rt: Runtime, d: Dist) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    f, meta = load_generator_with_meta(cfg.model, cfg.trust_code, cfg.weights)
    f, meta, base_ref = _seal_import(cfg, f, meta)
    if cfg.robust:
        _check_robust(cfg, f)
    labeller_name, labeller = _labeller(cfg, f, meta)
    feats = _features(cfg, meta, labeller)
    f = f.to(rt.device).requires_grad_(False)
    g = copy.deepcopy(f).requires_grad_(True).eval()  # eval: BatchNorm statistics stay those of f
    opt = torch.optim.Adam(_trainable(g, cfg), lr=cfg.lr)
    state = FitState(model=cfg.model, features=feats, base_sha256=meta.sha256, base_ref=base_ref)
    if cfg.resume:
        state = load_state(cfg.out / "checkpoint", g, opt, state, cfg)
    else:  # every rank collects the same (seeded) samples; rank 0's guard is broadcast anyway
        _round0(cfg, f, labeller, state, labeller_name)
    return _train(cfg, rt, d, f, g, opt, labeller, state, meta, labeller_name)


def _train(
    cfg: FitConfig,
    rt: Runtime,
    d: Dist,
    f: nn.Module,
    g: nn.Module,
    opt: torch.optim.Optimizer,
    labeller: AttributeClassifier,
    state: FitState,
    meta: ModelMeta,
    labeller_name: str,
) -> dict[str, Any]:
    g_model: nn.Module = g
    if d.world > 1:
        g_model = torch.nn.parallel.DistributedDataParallel(
            g, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    g_fwd = maybe_compile(g_model, cfg.compile)
    z_probe = latents(cfg.probe, z_dim_of(f), cfg.seed + 1)
    if not state.probes:
        state.probes.append({"step": 0, "round": 0, "rates": probe_rates(g, labeller, state.features, z_probe)})
    bar = tqdm(
        total=cfg.steps + (cfg.robust_for if cfg.robust else 0),
        initial=state.step,
        disable=not d.main,
        desc="fit",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    loop = _Loop(cfg, rt, d, f, g, g_fwd, opt, labeller, state, z_probe, bar, time.perf_counter() - state.seconds)
    while not state.done:
        loop.round(labeller_name)
    if state.guard_margin is None:
        loop.choose_guard_margin()
    if cfg.robust:
        loop.robust_phase()
    bar.total = state.step  # stopped early once the goal was met: show a full bar
    bar.refresh()
    bar.close()
    barrier(d)
    return _finish(cfg, state, f, g, meta, labeller) if d.main else {}


@dataclass
class _Loop:
    """The fit's steps: rounds of the paper's loss, then --robust's phase; probes and resumable checkpoints."""

    cfg: FitConfig
    rt: Runtime
    d: Dist
    f: nn.Module
    g: nn.Module
    g_fwd: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    labeller: AttributeClassifier
    state: FitState
    z_probe: torch.Tensor
    bar: tqdm
    start: float  # perf_counter of the (virtual) start: a resumed run counts its earlier seconds

    def trainer(self, guard: LatentGuard, miner: Optional[RobustMiner] = None) -> Trainer:
        cfg = self.cfg
        opt, scaler = self.opt, self.rt.grad_scaler()
        loss = UnlearnLoss(cfg.alpha)
        shipped = None
        if miner is not None:  # the attacker faces the guard that ships
            shipped = _sync_guard(self.state, self.d, self.rt, _shipped_margin(self.state))
        trainer = Trainer(
            self.f, self.g, self.g_fwd, guard, loss, opt, scaler, self.rt, self.d, miner, cfg.robust_weight, shipped
        )
        if cfg.keep_weight > 0 and self.state.keep:
            trainer.anchor = KeptAnchor(self.labeller.to(self.rt.device), tuple(self.state.keep), cfg.keep_weight)
        return trainer

    def round(self, labeller_name: str) -> None:
        cfg, state = self.cfg, self.state
        guard = _sync_guard(state, self.d, self.rt, cfg.margin)
        pool = LatentPool(guard, cfg.pool, cfg.seed, state.round)
        trainer = self.trainer(guard)
        start, end = state.round * cfg.steps_per_round, min(cfg.steps, (state.round + 1) * cfg.steps_per_round)
        while state.step < end:
            self.step(trainer, pool, start, end)
        _end_round(cfg, state, self.g, self.labeller, labeller_name, self.z_probe, pool)
        self.checkpoint()

    def choose_guard_margin(self) -> None:
        """--guard-margin, or the largest margin the kept attributes allow (fit/margin.py), once, after the rounds."""
        cfg, state = self.cfg, self.state
        if cfg.guard_margin is not None:
            state.guard_margin = cfg.guard_margin
        else:
            guard = _sync_guard(state, self.d, self.rt, cfg.margin)
            z = latents(MARGIN_LATENTS, guard.z_dim, cfg.seed + 2)
            margin, state.margin_table = choose_margin(self.g, guard, self.labeller, state.keep, z, cfg.guard_budget)
            # rank 0's choice on every rank: one shipped guard, whatever a device's rounding did
            state.guard_margin = float(broadcast_tensor(torch.tensor([margin], device=self.rt.device), self.d)[0])
        self.checkpoint()

    def robust_phase(self) -> None:
        """--robust-for steps after the rounds: the paper's loss plus the robust term on mined latents."""
        cfg, state = self.cfg, self.state
        miner = _miner(cfg, self.labeller, state, self.rt)
        if state.robust_step:  # resumed: the hits found so far
            miner.buffer = load_checkpoint(cfg.out / "checkpoint").tensors.get(BUFFER, miner.buffer)
        guard = _sync_guard(state, self.d, self.rt, cfg.margin)
        pool = LatentPool(guard, cfg.pool, cfg.seed, state.round + 1)
        trainer = self.trainer(guard, miner)
        end = state.step + cfg.robust_for - state.robust_step
        self.bar.total = end
        while state.step < end:
            self.step(trainer, pool, end - cfg.robust_for, end)
        if state.probes[-1].get("phase") != "robust":
            rates = probe_rates(self.g, self.labeller, state.features, self.z_probe)
            state.probes.append({"step": state.step, "round": state.round, "rates": rates, "phase": "robust"})
            self.checkpoint()

    def step(self, trainer: Trainer, pool: LatentPool, start: int, end: int) -> None:
        """One step of the segment [start, end): a round, or the robust phase."""
        cfg, state = self.cfg, self.state
        lr = scheduled_lr(cfg.lr_schedule, cfg.lr, state.step - start, end - start)
        parts = trainer.step(pool, state.step, cfg.batch, cfg.target_frac, lr)
        state.step += 1
        state.robust_step += trainer.miner is not None
        _after_step(cfg, state, parts, end, self.bar)
        if state.step % cfg.checkpoint_every == 0 and state.step < end:
            rates = probe_rates(self.g, self.labeller, state.features, self.z_probe)
            state.probes.append({"step": state.step, "round": state.round, "rates": rates})
            self.checkpoint(trainer.miner)

    def checkpoint(self, miner: Optional[RobustMiner] = None) -> None:
        self.state.seconds = time.perf_counter() - self.start
        if self.d.main:
            extra = {BUFFER: miner.buffer} if miner is not None and len(miner.buffer) else {}
            save_state(self.cfg.out / "checkpoint", self.state, self.g, self.opt, self.cfg, extra)


def _after_step(cfg: FitConfig, state: FitState, parts: dict[str, float], end: int, bar: tqdm) -> None:
    """Loss history every 10 steps (and at a round's end) and the progress bar's figures."""
    if state.step % 10 == 0 or state.step == end:
        state.history.append(parts)
    bar.update(1)
    live = state.probes[-1]["rates"]
    figures = {k: f"{v:.1e}" if k == "lr" else f"{v:.3f}" for k, v in parts.items() if k != "step"}
    bar.set_postfix(**figures, rate=f"{max(live.values()):.3f}", refresh=False)


def _miner(cfg: FitConfig, labeller: AttributeClassifier, state: FitState, rt: Runtime) -> RobustMiner:
    """--robust: the labeller (never the auditor) attacks the current g + guard every step of the phase."""
    attacker = labeller.to(rt.device).eval().requires_grad_(False)
    attack = AttackConfig(eps=cfg.robust_eps, steps=cfg.robust_steps)
    sizes = (cfg.robust_batch, cfg.robust_sample, cfg.robust_buffer)
    return RobustMiner(attacker, state.features, attack, *sizes, cfg.robust_margin, cfg.seed, tuple(state.keep))


def _shipped_margin(state: FitState) -> float:
    assert state.guard_margin is not None, "the guard's margin is chosen after the rounds"
    return state.guard_margin


def _margin_metrics(cfg: FitConfig, state: FitState) -> dict[str, Any]:
    """The shipped guard's margin and how it was chosen (the margins tried, labeller shifts in points)."""
    if cfg.guard_margin is not None:
        return {"margin": _shipped_margin(state), "chosen_by": "--guard-margin"}
    return {
        "margin": _shipped_margin(state),
        "chosen_by": f"largest kept-attribute shift ≤ {cfg.guard_budget:g} points (labeller)",
        "tried": state.margin_table,
    }


def _end_round(
    cfg: FitConfig,
    state: FitState,
    g: nn.Module,
    labeller: AttributeClassifier,
    name: str,
    z_probe: torch.Tensor,
    pool: LatentPool,
) -> None:
    rates = probe_rates(g, labeller, state.features, z_probe)
    state.probes.append({"step": state.step, "round": state.round, "rates": rates, "target_share": pool.target_share})
    if max(rates.values()) <= cfg.goal or state.step >= cfg.steps:
        state.done = True
        return
    state.round += 1
    c = collect_with_labeller(g, labeller, tuple(state.features), cfg.n_collect, cfg.seed + 1000 * state.round, name)
    _add_detectors(state, c, cfg, None)


def _finish(
    cfg: FitConfig, state: FitState, f: nn.Module, g: nn.Module, meta: ModelMeta, labeller: AttributeClassifier
) -> dict[str, Any]:
    from feature_unlearn.unlearn.fit.report import write_report

    first, last = state.probes[0]["rates"], state.probes[-1]["rates"]
    metrics = {
        "labeller_rate_before": first,
        "labeller_rate_after": last,
        "steps": state.step,
        "rounds": state.round + 1,
        "seconds": round(state.seconds, 1),
        "steps_per_second": round(state.step / max(state.seconds, 1e-9), 2),
        "guard_margin": _margin_metrics(cfg, state),
    }
    guard = GuardRecord(
        direction=tuple(tuple(r) for r in state.directions),
        threshold=tuple(state.thresholds),
        features=tuple(state.row_features),
        shift=tuple(tuple(r) for r in state.shifts) if state.keep else None,
        keep=tuple(state.keep),
        margin=_shipped_margin(state),
    )
    if state.keep:  # what the user asked to keep, f against what ships (labeller; evaluate has the auditor)
        z = latents(MARGIN_LATENTS, z_dim_of(f), cfg.seed + 3)
        metrics["kept"] = kept_shifts(f.cpu(), g.cpu(), guard_from_record(guard), labeller.cpu(), state.keep, z)
    record = ModelRecord(
        kind="generator",
        arch=meta.record.arch,
        dataset=meta.record.dataset,
        base_model=state.base_ref or cfg.model,
        base_sha256=meta.sha256,
        features=tuple(state.features),
        alpha=cfg.alpha,
        guard=guard,
        metrics=metrics,
        version=__version__,
    )
    save_checkpoint(cfg.out / "generator", {k: v.cpu() for k, v in g.state_dict().items()}, record)
    run = RunRecord(
        format_version=FORMAT_VERSION,
        options=cfg.as_dict(),
        metrics=metrics,
        detectors=state.detectors,
        collections=state.collections,
        probes=state.probes,
        guard=guard,
        base_model=state.base_ref or cfg.model,
        base_sha256=meta.sha256,
        alpha=cfg.alpha,
        version=__version__,
    )
    write_json(cfg.out / "run.json", run.as_json())
    write_json(cfg.out / "history.json", state.history)
    write_report(cfg.out, f.cpu(), g.cpu(), guard_from_record(guard), state, run.as_json())
    return metrics
