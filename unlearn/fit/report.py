"""What a person looks at after a fit: before/after grids, curves and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from feature_unlearn.unlearn.fit.margin import N_LATENTS
from feature_unlearn.unlearn.fit.state import FitState
from feature_unlearn.unlearn.guard import LatentGuard
from feature_unlearn.unlearn.images import grid, save_png
from feature_unlearn.unlearn.io import atomic_write, write_text
from feature_unlearn.unlearn.metrics import generate, latents


def before_after(f: nn.Module, g: nn.Module, guard: LatentGuard, out: Path, n: int = 16, seed: int = 4242) -> Path:
    """Rows of [f(z) | g(z)] for the same latents: half flagged targets, half not."""
    pool = latents(4096, guard.z_dim, seed)
    flagged = guard(pool)[1]
    z = torch.cat([pool[flagged][: n // 2], pool[~flagged][: n - n // 2]])
    pairs = torch.stack([generate(f, z), generate(g, z)], dim=1).flatten(0, 1)  # f, g alternating
    return save_png(grid(pairs, nrow=8, pad=2), out / "before_after.png", scale=3)


def curves(state: FitState, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [h["step"] for h in state.history]
    for key in ("loss", "recon", "unlearn", "percep"):
        ax1.plot(steps, [h[key] for h in state.history], label=key)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("loss parts")
    ax1.legend()
    for feat in state.features:
        ax2.plot([p["step"] for p in state.probes], [p["rates"][feat] for p in state.probes], marker="o", label=feat)
    ax2.set_xlabel("step")
    ax2.set_title("target rate on the probe set (labeller)")
    ax2.legend()
    fig.tight_layout()
    path = out / "curves.png"
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


def write_report(
    out: Path, f: nn.Module, g: nn.Module, guard: LatentGuard, state: FitState, run: dict[str, Any]
) -> None:
    before_after(f, g, guard, out)
    curves(state, out)
    m = run["metrics"]
    lines = [
        f"# Unlearning run: {run['base_model']} without {', '.join(state.features)}",
        "",
        f"{m['steps']} steps in {m['rounds']} round(s), {m['seconds']} s ({m['steps_per_second']} steps/s).",
        "",
        "| feature | labeller rate before | after |",
        "|---|---|---|",
        *[f"| {k} | {m['labeller_rate_before'][k]:.4f} | {m['labeller_rate_after'][k]:.4f} |" for k in state.features],
        "",
        "## Detectors (on the collected samples)",
        "",
        "| round | feature | threshold | precision | recall | flagged share |",
        "|---|---|---|---|---|---|",
        *[
            f"| {d['round']} | {d['feature']} | {d['threshold']:.3f} | {d['precision']:.3f} "
            f"| {d['recall']:.3f} | {d['flagged']:.3f} |"
            for d in state.detectors
        ],
        "",
        *_margin_lines(m.get("guard_margin")),
        *_kept_lines(m.get("kept")),
        "Rates here are the labeller's (the network that chose the targets); run",
        "`unlearn-cli evaluate` for the independent auditor, FID, entanglement and the attack.",
        "",
        "![before / after](before_after.png)",
        "",
        "Pairs: original f(z) | unlearned g(z), same latents; first rows are flagged targets.",
        "",
        "![curves](curves.png)",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))


def _kept_lines(kept: list[dict[str, Any]] | None) -> list[str]:
    """The kept attributes' rates on f and on what ships (g + the guard), labeller, percent."""
    if not kept:
        return []
    lines = [
        f"Kept attributes (`--keep`), labeller's rate on f and on the shipped g + guard ({N_LATENTS:,} prior latents):",
        "",
        "| attribute | f | g + guard | shift (points) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['attribute']} | {r['f']:.2f}% | {r['shipped']:.2f}% | {r['shift']:+.2f} |" for r in kept]
    hint = "A hint, not a verdict: `unlearn-cli evaluate` reads the same with the independent auditor."
    return [*lines, "", hint, ""]


def _margin_lines(margin: dict[str, Any] | None) -> list[str]:
    """Where the shipped guard moves a flagged latent, and the margins tried (labeller shifts, points)."""
    if not margin:
        return []
    lines = [
        f"The shipped guard moves a flagged latent {margin['margin']:g} below its threshold ({margin['chosen_by']}).",
        "",
    ]
    if margin.get("tried"):
        lines += ["| margin | largest kept-attribute shift (points) | attribute |", "|---|---|---|"]
        lines += [f"| {r['margin']:g} | {r['largest_shift']:.2f} | {r['attribute'] or '—'} |" for r in margin["tried"]]
        lines.append("")
    return lines
