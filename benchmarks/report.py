"""RESULTS.md and the plots (throughput.png, roofline.png) of one run, rendered from its records alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Optional

from benchmarks import resolution, serve_load
from benchmarks.measure import MEMORY_METHOD
from benchmarks.records import (
    FitSpeed,
    Inference,
    InferenceRow,
    PrecisionRow,
    Results,
    Unlearning,
    Verdict,
    all_targets,
)
from feature_unlearn.unlearn.io import atomic_write, write_text

INFERENCE = (
    "Images/s = batch / median call; p50 and p99 over every timed call (the backends alternate in shuffled rounds). "
    "All run the guarded module; ONNX Runtime through the service's `SafeGenerator`. % of peak = GFLOP/s "
    "(torch.utils.flop_counter) / the fp32 GEMM peak. First call: compilation included."
)
GUARD = (
    "Guarded vs unguarded export of the same weights, same backend, alternating in short blocks; overhead = median "
    "over rounds of the blocks' median ratio − 1 (neighbouring blocks cancel the machine's drift)."
)
UNLEARNING = (
    "Target rate on {n} random latents, graded by the auditor; FID in the auditor's feature space vs held-out data; "
    "the worst attribute flip on non-target latents; latent PGD success (ε = {eps}, {steps:.0f} steps, {starts:.0f} "
    "starts, L∞ and L2), the verdict of `unlearn-cli evaluate --attack` (labeller attacks, auditor judges); replay: "
    "the latents L∞ PGD found on the original, fed to each model."
)
PRECISION = (
    "`unlearn-cli export --precision` of the same guarded run (its speed is in the rows above: onnxruntime-cpu-int8, "
    "pytorch-cpu-bf16, through the same `SafeGenerator`). Error: grey levels vs fp32 PyTorch on export validation's "
    "random batch of 300; on the gate's latents: against the fp32 graph, with the images whose worst pixel is over 4. "
    "Rates and FID change: the export's quality gate, judged by the dataset's auditor on the same latents for fp32 and "
    "the reduced graph. fp32 below: a bf16 artifact runs smaller batches on its fp32 graph (the crossover its export "
    "measured). Load and first request: `SafeGenerator.load`, then one image."
)
PGD_MODELS = ("original", "unlearned+guard", "unlearned+guard+check", "oracle")
RATES = ("original", "original+guard", "unlearned", "unlearned+guard", "oracle")
RATES_HEAD = ("original", "orig+guard", "unlearned", "unl+guard", "oracle")


def fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def table(head: str, rows: Iterable[str]) -> list[str]:
    """A markdown table from its header and rows, each written as "a | b | c"."""
    return [f"| {head} |", "|" + "---|" * (head.count("|") + 1), *(f"| {r} |" for r in rows), ""]


def machine_section(res: Results) -> list[str]:
    m, noisy, probes = res.machine, res.noisy(), res.machine.foreign_cores_at_section_start
    peak = f"{m.gemm_peak:.1f} GFLOP/s (start {m.gemm_peak_start:.1f}, end {fmt(m.gemm_peak_end, '.1f')})"
    lines = [
        f"{m.cpu} · {m.cores} cores · {m.threads} threads · torch {m.torch} · onnxruntime {m.onnxruntime} · "
        f"GPU: {m.gpu or 'none'}.",
        f"fp32 GEMM peak (2048² torch matmul, best of 12): {peak}; 1-min load average {m.load_start:.2f} at start, "
        f"{fmt(m.load_end, '.2f')} at end; wall time {fmt(m.wall_s, '.0f')} s.",
        "Cores other processes kept busy in a 1 s idle probe at each section's start: "
        + ", ".join(f"{k} {v:.2f}" for k, v in probes.items())
        + "; per timed point: the inference tables.",
    ]
    lines += [] if res.complete else ["**Incomplete**: the run is going on or stopped before its last section."]
    lines += [f"**Noisy**: other processes used > 0.2 cores during {'; '.join(noisy)}. Read ratios."] if noisy else []
    return ["## Machine", "", "\n\n".join(lines), ""]


def targets_section(res: Results) -> list[str]:
    rows = (
        f"{t.metric} | {t.model} | {fmt(t.batch, 'd')} | {fmt(t.measured)} | {t.goal} | "
        f"{'**no**' if t.verdict is Verdict.MISSED else t.verdict.value} | {t.detail}"
        for t in all_targets(res)
    )
    return [
        "## Targets (ratios in this run)",
        "",
        *table("target | model | batch | measured | goal | met | detail", rows),
    ]


def inference_section(inf: Inference, peak: float) -> list[str]:
    lines = ["## Inference", "", INFERENCE, ""]
    head = "backend | batch | images/s | p50 ms | p99 ms | GFLOP/s | % of peak | calls | first call s | other jobs"
    for m in inf.models:
        rows = (
            f"{r.backend} | {r.batch} | {r.images_per_s:.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.gflops:.1f} | "
            f"{r.gflops / peak:.1%} | {r.calls} | {r.first_call_s:.2f} | {r.foreign_cores:.2f}"
            for r in inf.rows
            if r.model == m.name
        )
        lines += [f"### {m.name} ({m.mflop_per_image} MFLOP/image, z_dim {m.z_dim}, export {m.export_seconds} s)", ""]
        lines += table(head, rows)
    rows = (
        f"{g.backend} | {g.model} | {g.batch} | {g.guarded_ms} | {g.unguarded_ms} | {g.overhead:+.2%}"
        for g in inf.guard
    )
    lines += [
        "### Guard overhead",
        "",
        GUARD,
        "",
        *table("backend | model | batch | guarded ms | plain ms | overhead", rows),
    ]
    if inf.memory:
        head = "model | backend | batch | steady MB | peak MB | working MB | high-water MB | error"
        rows = (
            f"{r.model} | {r.backend} | {r.batch} | {fmt(r.steady_mb, '.1f')} | {fmt(r.peak_mb, '.1f')} | "
            f"{fmt(r.peak_mb - r.steady_mb if r.peak_mb and r.steady_mb else None, '.1f')} | {fmt(r.hwm_mb, '.1f')} | "
            f"{r.error or ''}"
            for r in inf.memory
        )
        lines += ["### Peak memory", "", MEMORY_METHOD, "", *table(head, rows)]
    lines += precision_section(inf)
    rows = (f"{f.name} | {f.model or 'all'} | {fmt(f.batch, 'd')} | {f.reason}" for f in inf.failures)
    return lines + ["### Not measured", "", *table("backend | model | batch | reason", rows)]


def _gate_pixels(p: PrecisionRow) -> str:
    g = p.gate_pixels
    return "n/a" if not g else f"{g['max']:.0f} / {g['mean']:.3f}, {g['images_over_4']:.0f} over 4"


def precision_section(inf: Inference) -> list[str]:
    if not inf.precision:
        return []
    head = "model | precision | backend | speed vs fp32 ORT, batch 64 / 1 | max / mean error | on the gate's latents | "
    head += "largest rate shift pp | FID change | judged by | fp32 below | export s | load s | first request s"
    rows = []
    for p in inf.precision:
        ratios = []
        for batch in (64, 1):
            a, b = inf.find(p.backend, p.model, batch), inf.find("onnxruntime-cpu", p.model, batch)
            ratios.append(f"{a.images_per_s / b.images_per_s:.2f}x" if a and b else "n/a")
        fid = f"{100 * p.fid_change:+.2f}%" if p.fid_change is not None else "n/a"
        rows.append(
            f"{p.model} | {p.precision} | {p.backend} | {' / '.join(ratios)} | {p.image_max} / {p.image_mean:.3f} | "
            f"{_gate_pixels(p)} | {fmt(p.rate_shift_pp, '.2f')} | {fid} | {p.gate} | {fmt(p.fp32_below, 'd')} | "
            f"{p.export_s:.1f} | {p.load_s:.2f} | {p.first_request_s:.3f}"
        )
    return ["### Reduced precision", "", PRECISION, "", *table(head, rows)]


def fit_section(fit: FitSpeed, unlearning: Optional[Unlearning]) -> list[str]:
    base = {r.device: r.steps_per_s for r in fit.rows if (r.mode, r.precision) == ("eager", "fp32")}
    run = next((r.fit for r in (unlearning.rows if unlearning else ()) if r.model == fit.model), None)
    rows = (
        f"{r.device} | {r.mode} | {r.precision} | {fmt(r.steps_per_s)} | "
        f"{fmt(r.steps_per_s / b if r.steps_per_s and (b := base.get(r.device)) else None, '.2f')} | "
        f"{fmt(r.warmup_s, '.1f')} | {fmt(run.steps / r.steps_per_s if run and r.steps_per_s else None, '.0f')} | "
        f"{r.error or ''}"
        for r in fit.rows
    )
    lines = [
        "## Fit speed",
        "",
        f"`unlearn.fit.loop.Trainer` steps of {fit.model}, batch {fit.batch}: {fit.steps} timed steps per "
        f"configuration (alternating in rounds) after {fit.warmup} warm-up steps (compilation happens there).",
        "",
        *table("device | mode | precision | steps/s | vs eager fp32 | warm-up s | est. s to goal | error", rows),
    ]
    if run:
        lines += [
            f"Est. s to goal: the {run.steps} steps of the unlearning fit / steps/s (collection rounds apart).",
            "",
        ]
    if d := fit.ddp:
        speeds = f"{d.one_process_steps_per_s:.2f} vs {d.two_process_steps_per_s:.2f} steps/s"
        lines += [
            f"DDP (`unlearn-cli fit`, {d.steps} steps, global batch {d.global_batch}): 1 process × {d.threads} threads "
            f"vs torchrun 2 processes × 1 thread (gloo): {speeds}, speed-up "
            f"{d.two_process_steps_per_s / d.one_process_steps_per_s:.2f}×.",
            "",
        ]
    return lines + ([f"DDP failed: {fit.ddp_error}", ""] if fit.ddp_error else [])


def unlearning_section(un: Unlearning) -> list[str]:
    head = "model | feature | " + " | ".join(RATES_HEAD) + " | FID orig / unl / unl+guard | "
    head += "FID w/o feature unl+guard / oracle | FID vs same images w/o it unl+guard / oracle | "
    head += "largest other shift (pp) | worst flip | "
    rows = (
        f"{r.model} | {r.feature} | "
        + " | ".join(fmt(r.target_rate.get(k), ".4f") for k in RATES)
        + f" | {' / '.join(fmt(r.fid.get(k), '.2f') for k in ('original', 'unlearned', 'unlearned+guard'))} | "
        f"{' / '.join(fmt(r.fid_without.get(k), '.2f') for k in ('unlearned+guard', 'oracle'))} | "
        f"{' / '.join(fmt(r.fid_counterfactual.get(k), '.2f') for k in ('unlearned+guard', 'oracle'))} | "
        f"{r.worst_shift[0]} {fmt(r.worst_shift[1], '+.2f')}{' (kept: ' + ', '.join(r.kept) + ')' if r.kept else ''} | "
        f"{r.worst_flip[0]} {fmt(r.worst_flip[1])} | "
        f"{' / '.join(fmt(r.pgd_success.get(k)) for k in PGD_MODELS)} | "
        f"{' / '.join(fmt(r.pgd_l2.get(k)) for k in PGD_MODELS)} | "
        f"{' / '.join(fmt(r.replay.get(k)) for k in PGD_MODELS)} | "
        f"{r.fit.seconds:.0f} s, {r.fit.steps} steps, goal {'met' if r.fit.goal_reached else 'not met'}"
        for r in un.rows
    )
    note = UNLEARNING.format(n=un.eval_n, **un.attack)
    pgd_head = "PGD L∞ orig / unl+guard / unl+guard+check (adaptive) / oracle | PGD L2, same | replay, same | fit"
    lines = ["## Unlearning (auditor-graded)", "", note, "", *table(head + pgd_head, rows)]
    return lines + [f"- {f.name}: not run ({f.reason})" for f in un.failures]


def markdown(res: Results, plots: Sequence[Path] = ()) -> str:
    lines = ["# Benchmarks", "", f"Produced by `{res.machine.command}` on {res.machine.date} (UTC).", ""]
    lines += machine_section(res) + targets_section(res)
    lines += inference_section(res.inference, res.machine.gemm_peak) if res.inference else []
    lines += fit_section(res.fit, res.unlearning) if res.fit else []
    lines += unlearning_section(res.unlearning) if res.unlearning else []
    if res.serve or res.serve_error:
        serve = serve_load.markdown(res.serve) if res.serve else f"not measured: {res.serve_error}\n"
        lines += ["## HTTP serving (benchmarks/serve_load.py)", "", serve]
    lines += resolution.markdown(res.resolution) if res.resolution else []
    return "\n".join(lines + ["## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots), ""])


def plot(inf: Inference, ylabel: str, value: Callable[[InferenceRow], float], path: Path) -> Path:
    """One panel per model: ``value`` against the batch, a line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(inf.models), figsize=(4.2 * len(inf.models), 3.6), squeeze=False)
    for ax, m in zip(axes[0], inf.models, strict=True):
        for backend in dict.fromkeys(r.backend for r in inf.rows if r.model == m.name):
            rows = [r for r in inf.rows if (r.model, r.backend) == (m.name, backend)]
            ax.plot([r.batch for r in rows], [value(r) for r in rows], marker="o", label=backend)
        ax.set_xscale("log", base=2)
        ax.set(title=m.name, xlabel="batch", ylabel=ylabel, yscale="log" if path.stem == "throughput" else "linear")
        if path.stem == "roofline":
            ax.axhline(0.7, color="k", lw=0.8, ls="--")  # the target
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def write_report(res: Results, out: Path) -> Path:
    plots, inf, peak = [], res.inference, res.machine.gemm_peak
    if inf and inf.models:
        plots.append(plot(inf, "images/s", lambda r: r.images_per_s, out / "throughput.png"))
        plots.append(plot(inf, "share of fp32 GEMM peak", lambda r: r.gflops / peak, out / "roofline.png"))
    if res.resolution and res.resolution.models:
        plots.append(resolution.plot(res.resolution, out / "resolution.png"))
    return write_text(out / "RESULTS.md", markdown(res, plots))
