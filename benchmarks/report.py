"""RESULTS.md and the PNG plots of one benchmark run, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feature_unlearn.unlearn.io import atomic_write, write_text

WHY = {  # what usually explains a miss; the numbers beside it are this run's
    "ORT guarded / torch eager, batch 64": "eager PyTorch is already within reach of ONNX Runtime for these small transposed convolutions; "
    "the gap a fused graph buys shrinks when per-op overhead is a small share of the call",
    "best CPU backend / fp32 GEMM peak, batch 64": "32x32 generators are memory- and layout-bound: the last transposed convolution has 1-3 output "
    "channels (a GEMM with N <= 3 cannot use the vector units fully), and BatchNorm/ReLU/tanh/uint8 steps add memory traffic with no FLOPs",
    "guard overhead (ORT, guarded vs unguarded graph), batch 64": "the guard is a [N, z] x [z, K] product and a few element-wise ops; "
    "against a generator call of a few ms, what remains is timing noise and fixed per-node overhead",
    "TensorRT fp16 / eager fp32 CUDA, batch 256": "needs a GPU",
    "residual rate (unlearned+guard) / original": "the auditor sees the feature in images whose latents stay below the threshold "
    "(the labeller-trained linear detector misses part of a non-linear attribute), and the fine-tune only saw the step budget",
    "residual rate - oracle's (pp)": "as above: what the linear detector misses stays",
    "FID unlearned / original": "held-out data still shows the feature at its natural rate; removing it (target latents now map to f(ẑ)) "
    "moves the generated distribution away from that data, and the fine-tune also drifts on non-target latents",
    "worst attribute flip on non-target samples": "the fine-tune moves weights shared by all latents; the attribute named is the one most "
    "entangled with the feature in this generator",
    "PGD success (unlearned+guard) / original": "the guard removes only the component along û beyond t; the attacker moves z in every "
    "other direction too, and a non-linear generator has other routes to the feature",
    "fit wall time (s)": "steps × seconds per step on this machine, plus the collection and probe rounds",
}

WHY_PREFIX = {
    "torch-compile": "on CPU, inductor does not generate convolution kernels: transposed convolutions stay calls into the same "
    "oneDNN/ATen kernels eager uses, so compilation can only fuse the cheap element-wise steps around them, while each call pays "
    "dynamo's guard checks and the compiled wrapper",
}


def _why(name: str) -> str:
    return WHY.get(name) or next((v for k, v in WHY_PREFIX.items() if name.startswith(k)), "")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def machine_section(res: dict[str, Any]) -> list[str]:
    m = res["machine"]
    lines = ["## Machine", "",
             f"{m['cpu']} · {m['cores']} cores · {m['threads']} threads for torch and ONNX Runtime · torch {m['torch']} · "
             f"onnxruntime {m['onnxruntime']} · GPU: {m['gpu'] or 'none'}", "",
             f"fp32 GEMM peak (2048² torch matmul, best of 12): {m['gemm_peak_gflops']:.1f} GFLOP/s "
             f"(start {m['gemm_peak_start']:.1f}, end {_fmt(m['gemm_peak_end'], '.1f')}); 1-min load average {m['load_start']:.2f} at start, "
             f"{m['load_end']:.2f} at end; wall time {m['wall_s']:.0f} s."]  # fmt: skip
    probes = m.get("foreign_cores_at_section_start") or {}
    if probes:
        lines += ["", "Cores other processes kept busy during a 1 s idle probe at each section's start: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in probes.items()) + ". Inference tables give the same figure for each "
                  "(model, batch)'s timed rounds (machine busy time minus this process's CPU time)."]  # fmt: skip
    if not res.get("complete", True):
        lines += [
            "",
            "**Incomplete**: the run is still going or stopped before its last section; what follows is what it measured so far.",
        ]
    if m.get("noisy"):
        lines += [
            "",
            f"**Noisy**: {m['noisy']}. Ratios measured in the same rounds are the figures to read there; absolute numbers are not.",
        ]
    return lines + [""]


def targets_section(res: dict[str, Any]) -> list[str]:
    verdict = {True: "yes", False: "**no**", None: "n/a"}
    rows = [[t["name"], t["model"], _fmt(t["measured"], ".3f"), t["target"],
             "not judged" if t["met"] is None and t["measured"] is not None else verdict[t["met"]], t["detail"]]
            for t in res.get("targets", [])]  # fmt: skip
    lines = (
        ["## Targets (ratios in this run)", ""]
        + _table(["target", "model", "measured", "goal", "met", "detail"], rows)
        + [""]
    )
    short = [t for t in res.get("targets", []) if t["met"] is False or t["met"] is None]
    lines += ["## Falls short", ""]
    if res["machine"].get("noisy"):
        lines += [
            "Parts of this run were disturbed by other jobs (see Machine): a speed ratio that misses there may be them, not the backend.",
            "",
        ]
    if not short:
        return lines + ["Nothing: every target measured in this run is met.", ""]
    for t in short:
        state = f"measured {_fmt(t['measured'])} against {t['target']}" if t["measured"] is not None else "not measured"
        why = _why(t["name"])
        lines.append(
            f"- **{t['name']}** ({t['model']}): {state} ({t['detail']}).{' Likely cause: ' + why + '.' if why else ''}"
        )
    return lines + [""]


def inference_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("inference", [])
    if not rows:
        return []
    lines = ["## Inference", "",
             "Images/s = batch / median call time; p50/p99 over every timed call (contenders alternate in shuffled rounds); "
             "every backend runs the guarded module (shift guard -> generator -> uint8 NHWC). % of peak = achieved GFLOP/s "
             "(FLOPs per image from torch.utils.flop_counter) / this run's fp32 GEMM peak. First call s: the first warm-up call, "
             "compilation included (inductor's on-disk cache may hold an earlier compilation of the same graph).", ""]  # fmt: skip
    for mdl in res.get("models", []):
        lines += [f"### {mdl['name']} ({mdl['mflop_per_image']} MFLOP/image, z_dim {mdl['z_dim']}, weights: {mdl['weights']}, "
                  f"guarded export {mdl['export_seconds']} s)", ""]  # fmt: skip
        body = [[r["backend"], r["batch"], f"{r['images_per_s']:.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['gflops']:.1f}",
                 f"{100 * r['roofline_fraction']:.1f}%", r["calls"], f"{r['first_call_s']:.2f}", _fmt(r.get("foreign_cores"), ".2f")]
                for r in rows if r["model"] == mdl["name"]]  # fmt: skip
        head = ["backend", "batch", "images/s", "p50 ms", "p99 ms", "GFLOP/s", "% of peak", "calls", "first call s", "other jobs (cores)"]
        lines += _table(head, body) + [""]
    g = res.get("guard_overhead", {})
    if g.get("rows"):
        lines += ["### Guard overhead", "", "Guarded graph (shift guard) vs the unguarded export of the same weights, same backend, alternating "
                  "in blocks (one untimed call after each switch). `overhead` = median over rounds of (guarded block median / unguarded block "
                  "median) − 1, the figure the target reads: neighbouring blocks cancel the machine's slow speed drift; `of medians` "
                  "compares the overall medians.", ""]  # fmt: skip
        lines += _table(["backend", "model", "batch", "guarded ms", "unguarded ms", "overhead", "of medians"],
                        [[r["backend"], r["model"], r["batch"], r["guarded_ms"], r["unguarded_ms"], f"{100 * r['overhead']:+.2f}%",
                          f"{100 * r['overhead_of_medians']:+.2f}%"] for r in g["rows"]]) + [""]  # fmt: skip
    return lines + memory_section(res) + skipped_section(res)


def memory_section(res: dict[str, Any]) -> list[str]:
    mem = res.get("memory", {})
    if not mem.get("rows"):
        return []
    lines = ["### Peak memory", "", mem["method"], ""]
    body = [[r["model"], r["backend"], r["batch"], *(r.get(k, "—") for k in ("steady_mb", "peak_mb", "working_mb", "hwm_mb")), r.get("error", "")]
            for r in mem["rows"]]  # fmt: skip
    return (
        lines
        + _table(["model", "backend", "batch", "steady MB", "peak MB", "working MB", "high-water MB", "error"], body)
        + [""]
    )


def skipped_section(res: dict[str, Any]) -> list[str]:
    rows = [[s["backend"], s["reason"]] for s in res.get("skipped", [])] + [
        [f"{f['backend']} ({f['model']}, batch {f['batch']})", f["error"]] for f in res.get("failures", [])
    ]
    return (["### Backends not measured", ""] + _table(["backend", "reason"], rows) + [""]) if rows else []


def fit_section(res: dict[str, Any]) -> list[str]:
    fit = res.get("fit")
    if not fit:
        return []
    lines = ["## Fit speed", "", f"`unlearn.fit.loop.Trainer` steps on {fit['model']}, batch {fit['batch']}, {fit['steps']} timed steps after "
             f"{fit['warmup']} warm-up steps (compilation happens in warm-up).", ""]  # fmt: skip
    body = [[r["device"], r["mode"], r["precision"], _fmt(r.get("steps_per_s")), _fmt(r.get("speedup_vs_eager_fp32"), ".2f"),
             _fmt(r.get("warmup_s"), ".1f"), _fmt(r.get("time_to_goal_s_est"), ".0f"), r.get("error", "")] for r in fit["rows"]]  # fmt: skip
    lines += _table(
        ["device", "mode", "precision", "steps/s", "vs eager fp32", "warm-up s", "est. s to goal", "error"], body
    ) + [""]
    if fit.get("time_to_goal_note"):
        lines += [fit["time_to_goal_note"], ""]
    d = fit.get("ddp")
    if d and "error" not in d:
        lines += [f"DDP (`unlearn-cli fit`, {d['steps']} steps, global batch {d['global_batch']}, steps/s from run.json): "
                  f"1 process × {d['one_process']['threads']} threads {d['one_process']['steps_per_s']:.2f} steps/s; "
                  f"torchrun 2 processes × 1 thread (gloo) {d['two_process_ddp']['steps_per_s']:.2f} steps/s; speed-up {d['speedup']:.2f}×.", ""]  # fmt: skip
    elif d:
        lines += [f"DDP: failed: {d['error']}", ""]
    return lines


def unlearning_section(res: dict[str, Any]) -> list[str]:
    un = res.get("unlearning")
    if not un:
        return []
    a = un["attack"]
    lines = ["## Unlearning (auditor-graded)", "",
             f"Residual target rate on {un['eval_n']} random latents per model (the auditor, never the labeller); FID in the auditor's "
             f"feature space vs held-out data; worst attribute flip on non-target latents; latent PGD (ε = {a['eps']}, {a['steps']} steps, "
             f"{a['starts']} starts) success rate.", ""]  # fmt: skip
    body = []
    for r in un["rows"]:
        t, f, p = r["target_rate"], r["fid"], r["pgd_success"]
        body.append([r["model"], r["feature"], *(_fmt(t.get(k), ".4f") for k in ("original", "original+guard", "unlearned", "unlearned+guard", "oracle")),
                     " / ".join(_fmt(f.get(k), ".2f") for k in ("original", "unlearned", "unlearned+guard")),
                     f"{r['worst_flip']['attribute']} {_fmt(r['worst_flip']['rate'], '.3f')}",
                     " / ".join(_fmt(p.get(k), ".3f") for k in ("original", "unlearned", "unlearned+guard")),
                     f"{r['fit']['seconds']:.0f} s, {r['fit']['steps']} steps, goal {'met' if r['fit']['goal_reached'] else 'not met'}"])  # fmt: skip
    head = ["model", "feature", "original", "orig+guard", "unlearned", "unl+guard", "oracle", "FID orig / unl / unl+guard",
            "worst flip", "PGD orig / unl / unl+guard", "fit"]  # fmt: skip
    lines += _table(head, body) + [""]
    lines += [f"- {s['model']}: not run ({s['reason']})" for s in un["skipped"]]
    return lines + ([""] if un["skipped"] else [])


def serve_section(res: dict[str, Any]) -> list[str]:
    s = res.get("serve")
    if not s:
        return []
    if "error" in s or "markdown" not in s:
        return [
            "## HTTP serving (benchmarks/serve_load.py)",
            "",
            f"not measured: {s.get('error', s.get('reason'))}",
            "",
        ]
    return ["## HTTP serving (benchmarks/serve_load.py)", "", s["markdown"], ""]


def markdown(res: dict[str, Any]) -> str:
    cmd = res["machine"]["command"]
    lines = ["# Benchmarks", "", f"Produced by `{cmd}` on {res['machine']['date']} (UTC). Reproduce with the same command; "
             "`unlearn-cli bench --quick` is the ≤ 5-minute smoke version.", ""]  # fmt: skip
    lines += (
        machine_section(res)
        + targets_section(res)
        + inference_section(res)
        + fit_section(res)
        + unlearning_section(res)
        + serve_section(res)
    )
    plots = res.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def _series(rows: list[dict[str, Any]], model: str, key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        if r["model"] == model:
            xs, ys = out.setdefault(r["backend"], ([], []))
            xs.append(r["batch"])
            ys.append(r[key])
    return out


def _save(fig: Any, path: Path) -> None:
    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=100)

    atomic_write(path, write)


def plot(res: dict[str, Any], out: Path) -> list[Path]:
    """throughput.png (images/s vs batch per backend) and roofline.png (share of the GEMM peak)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res.get("inference", [])
    models = [m["name"] for m in res.get("models", [])]
    if not rows or not models:
        return []
    paths = []
    for name, key, ylabel, log in (
        ("throughput", "images_per_s", "images/s", True),
        ("roofline", "roofline_fraction", "share of fp32 GEMM peak", False),
    ):
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            for backend, (xs, ys) in _series(rows, model, key).items():
                ax.plot(xs, ys, marker="o", label=backend)
            ax.set_xscale("log", base=2)
            if log:
                ax.set_yscale("log")
            else:
                ax.axhline(1.0, color="k", lw=0.8)
                ax.axhline(0.7, color="k", lw=0.8, ls="--")
                ax.set_ylim(0, max(1.05, 1.1 * max((r[key] for r in rows if r["model"] == model), default=0.0)))
            ax.set_title(model)
            ax.set_xlabel("batch")
            ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(res: dict[str, Any], out: Path) -> Path:
    res["plots"] = [str(p) for p in plot(res, out)]
    return write_text(out / "RESULTS.md", markdown(res))
