"""How cost grows with resolution: our DCGAN family at 32, 64, 128 and 256 pixels on every CPU backend and over HTTP.

The generators are random-initialised members of faces-dcgan's family (its z_dim, ngf and channels;
``DCGANConfig.resolution`` adds one stride-2 block per doubling), not trained models: speed does not
depend on the weights. Their BatchNorm statistics come from 256 prior draws, as training would set
them, so that images vary with the latent and the export's self-test can tell its guard modes apart.
Each runs behind a random shift guard (t = 1), like the inference section's zoo models: eager
PyTorch and torch.compile in process, ONNX Runtime through the service's ``SafeGenerator``, and
``unlearn-cli serve`` under concurrent loopback clients (JSON with base64 PNGs, the service's
default response), whose CPU per image is read from /proc and set against the model's own
(ONNX Runtime in process, same threads, same batch).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from benchmarks.config import Run
from benchmarks.failure import Failure

RESOLUTIONS = (32, 64, 128, 256)
BATCHES = (1, 64)
FAMILY = "faces-dcgan"  # the zoo generator whose architecture (less its resolution) the rows use
NOTE = (
    "Random-initialised generators of faces-dcgan's DCGAN family ({arch}) at each resolution, not trained models "
    "(speed does not depend on the weights), behind a random shift guard; images/s = batch / median call, GFLOP/s = "
    "MFLOP/image (torch.utils.flop_counter) × images/s; CPU ms/image = this process's CPU time (every thread) over "
    "the timed calls / images. HTTP: `unlearn-cli serve` (max batch 64, 5 ms delay, {threads} ONNX Runtime "
    'thread(s)) under C keep-alive loopback clients, each POSTing `{{"n": batch}}` back to back (JSON with base64 '
    "PNGs) for {seconds:g} s after a warm-up, or as long as the model alone needs for {requests} requests if that "
    "is longer; the server's and the clients' CPU from /proc; model = ONNX Runtime in process (`SafeGenerator`, same "
    "threads) at the mean batch the server ran, timed right after the load. The load client shares the machine's cores "
    "with the server."
)


@dataclass(frozen=True)
class Plan:
    """What one run measures: every resolution at the full and quick scales, two at a test's tiny one."""

    resolutions: tuple[int, ...]
    batches: tuple[int, ...]
    compile: bool  # torch.compile (default mode) as well
    http_seconds: float  # of load per (resolution, batch), at least ...
    http_warmup: float
    http_requests: int = 0  # ... the time the model alone needs for this many requests (few fit in 3 s at 256x256)


def plan(cfg: Run) -> Plan:
    tiny = cfg.scale is not None  # tests pass their own scale
    batches = tuple(sorted(set(cfg.batches))) or ((1, 4) if tiny else BATCHES)
    compile_ = "default" in cfg.s.compile_modes
    if tiny:
        return Plan((32, 64), batches, compile_, 0.5, 0.2)
    return Plan(RESOLUTIONS, batches, compile_, 3.0 if cfg.quick else min(10.0, cfg.serve_seconds), 1.0, 16)


@dataclass(frozen=True)
class ResolutionModel:
    resolution: int
    mflop_per_image: float
    parameters: int
    export_seconds: float


@dataclass(frozen=True)
class ResolutionRow:
    resolution: int
    backend: str
    batch: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    gflops: float
    cpu_ms_per_image: float  # this process, every thread
    calls: int
    first_call_s: float  # compilation included
    foreign_cores: float


@dataclass(frozen=True)
class HttpRow:
    resolution: int
    batch: int  # images per request
    clients: int
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    mean_model_batch: float  # images per model call in the server (it merges concurrent requests)
    server_cpu_ms_per_image: float
    client_cpu_ms_per_image: float
    model_cpu_ms_per_image: Optional[float]  # ONNX Runtime in process at the server's mean batch, same threads
    in_process_images_per_s: Optional[float]  # the same

    @property
    def model_share(self) -> Optional[float]:
        """The model's part of the server's CPU per image (the rest: HTTP, JSON, PNG, base64, batching)."""
        m = self.model_cpu_ms_per_image
        return None if m is None or not self.server_cpu_ms_per_image else min(1.0, m / self.server_cpu_ms_per_image)


@dataclass(frozen=True)
class ResolutionBench:
    arch: dict[str, Any]
    threads: int
    http_seconds: float = 0.0
    http_requests: int = 0
    models: tuple[ResolutionModel, ...] = ()
    rows: tuple[ResolutionRow, ...] = ()
    http: tuple[HttpRow, ...] = ()
    failures: tuple[Failure, ...] = ()

    def __add__(self, other: ResolutionBench) -> ResolutionBench:
        parts = ("models", "rows", "http", "failures")
        return dataclasses.replace(self, **{k: getattr(self, k) + getattr(other, k) for k in parts})

    def row(self, backend: str, resolution: int, batch: int) -> Optional[ResolutionRow]:
        key = (backend, resolution, batch)
        return next((r for r in self.rows if (r.backend, r.resolution, r.batch) == key), None)


# --- the generators and their exports ------------------------------------------------------------


def family_arch(resolution: int) -> dict[str, Any]:
    """faces-dcgan's architecture at ``resolution`` (z_dim, ngf, ndf and channels from the zoo's sidecar)."""
    from feature_unlearn.unlearn.io import read_json
    from feature_unlearn.unlearn.zoo import WEIGHTS

    return dict(read_json(WEIGHTS / f"{FAMILY}.json", "zoo sidecar")["arch"]) | {"resolution": resolution}


def random_generator(resolution: int, seed: int = 0) -> Any:
    """A random-initialised DCGAN of the family, BatchNorm statistics from 256 prior draws; eval mode."""
    import torch

    from feature_unlearn.unlearn.models import build_generator

    torch.manual_seed(seed + resolution)
    g = build_generator(family_arch(resolution))
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        g.train()(torch.randn(256, int(g.z_dim)))  # type: ignore[arg-type]
    return g.eval()


def export_random(g: Any, resolution: int, out: Path) -> tuple[Any, float]:
    """The guarded module (the backends' common work) and the export's wall seconds (``unlearn-cli export``'s API)."""
    import numpy as np

    from feature_unlearn.export import ExportConfig, export_model
    from feature_unlearn.export.module import build_module
    from feature_unlearn.unlearn.artifacts import GuardRecord, ModelRecord
    from feature_unlearn.unlearn.io import save_checkpoint
    from feature_unlearn.unlearn.models import arch_dict, z_dim_of

    u = np.random.default_rng(0).standard_normal(z_dim_of(g))
    vector = GuardRecord(direction=(tuple((u / np.linalg.norm(u)).tolist()),), threshold=(1.0,), features=("bench",))
    record = ModelRecord(kind="generator", arch=arch_dict(g.cfg), dataset="faces", guard=vector)
    record = dataclasses.replace(record, base_model=f"random-dcgan-{resolution}", base_sha256="0" * 64)
    run = out.with_name(out.name + "-run")
    save_checkpoint(run / "generator", g.state_dict(), record)
    started = time.perf_counter()
    export_model(ExportConfig(source=str(run), out=out))
    return build_module(g, vector, "shift"), time.perf_counter() - started


# --- measurement ---------------------------------------------------------------------------------


def bench_point(res: int, batch: int, module: Any, export: Path, mflop: float, cfg: Run, p: Plan) -> ResolutionBench:
    """Every in-process backend on one (resolution, batch), alternating in rounds (``inference.timed``)."""
    import torch

    from benchmarks.inference import build, compiled, ort_fn, timed, torch_fn
    from feature_unlearn.unlearn.metrics import latents

    torch._dynamo.reset()  # each shape compiles afresh, as a service with one batch size would
    z = latents(batch, int(module.z_dim), cfg.seed + batch)
    builders = {"torch-eager": lambda: torch_fn(module, z)}
    if p.compile:
        builders["torch-compile"] = compiled(module, "default", z)
    builders["onnxruntime-cpu"] = lambda: ort_fn(export, z.numpy(), cfg.threads)
    fns, failed = build(builders)
    timings, errors = timed(fns, cfg, cfg.seed + batch + res)
    rows = []
    for backend, t in timings.items():
        ips = batch / t.median_s
        cpu_ms = 1e3 * t.cpu_s / (len(t.samples) * batch)
        times = round(t.ms(50), 3), round(t.ms(99), 3), round(mflop * ips / 1e3, 2), round(cpu_ms, 4)
        rows.append(
            ResolutionRow(
                res, backend, batch, round(ips, 1), *times, len(t.samples), round(t.warmup[0], 3), t.foreign_cores
            )
        )
    print(f"  {res}x{res} batch {batch}: " + ", ".join(f"{r.backend} {r.images_per_s:.0f}/s" for r in rows), flush=True)
    skipped = tuple(Failure(b, e, batch=batch, resolution=res) for b, e in (failed | errors).items())
    return ResolutionBench(rb_arch(), cfg.threads, rows=tuple(rows), failures=skipped)


def rb_arch(resolution: Optional[int] = None) -> dict[str, Any]:
    """The family's architecture as the table names it (no resolution: it is the table's variable)."""
    arch = family_arch(resolution or 32)
    return arch if resolution else {k: v for k, v in arch.items() if k != "resolution"}


def clients_for(batch: int) -> int:
    """Enough concurrent clients to keep the server's batches full (64 images) without more than 16."""
    return max(2, min(16, 64 // batch))


def model_at(export: Path, batch: int, threads: int, seconds: float) -> tuple[float, float]:
    """ONNX Runtime in process (``SafeGenerator``) at ``batch``: images/s and CPU ms per image."""
    import numpy as np

    from benchmarks.inference import ort_fn
    from benchmarks.measure import interleave

    z = np.random.default_rng(batch).standard_normal((batch, int(rb_arch()["z_dim"]))).astype(np.float32)
    t = interleave({"model": ort_fn(export, z, threads)}, 1, seconds, (5, 2000), 1)[0]["model"]
    return batch / t.median_s, 1e3 * t.cpu_s / (len(t.samples) * batch)


def http_point(
    server: Any, res: int, batch: int, p: Plan, export: Path, threads: int, model: Optional[ResolutionRow]
) -> HttpRow:
    """Concurrent clients of ``batch`` images each; the model's own cost is then timed at the batch the server ran."""
    from benchmarks.serve_load import LoadOptions, http_load

    before, clients = server.metrics(), clients_for(batch)
    seconds = max(p.http_seconds, min(60.0, p.http_requests * batch / model.images_per_s if model else 0.0))
    h = http_load(server, LoadOptions(seconds=seconds, warmup=p.http_warmup, clients=clients, images=batch))
    after = server.metrics()
    calls = after["unlearn_serve_batch_images_count"] - before["unlearn_serve_batch_images_count"]
    mean_batch = (after["unlearn_serve_batch_images_sum"] - before["unlearn_serve_batch_images_sum"]) / max(1.0, calls)
    ips, cpu_ms = model_at(export, max(1, round(mean_batch)), threads, min(1.0, p.http_seconds / 2))
    print(f"  {res}x{res} HTTP {batch} image(s)/request: {h.images_per_s:.0f}/s (model alone {ips:.0f}/s)", flush=True)
    return HttpRow(
        res, batch, clients, h.requests, h.errors, round(h.images_per_s, 1), round(h.p50_ms, 2), round(h.p99_ms, 2),
        round(mean_batch, 1), round(h.server_cpu_ms_per_image, 4), round(h.client_cpu_ms_per_image, 4),
        round(cpu_ms, 4), round(ips, 1),
    )  # fmt: skip


def http_rows(res: int, export: Path, cfg: Run, p: Plan, measured: ResolutionBench, log: Path) -> ResolutionBench:
    """``unlearn-cli serve`` on the export, loaded at each batch in turn; a server that fails is reported."""
    from benchmarks.measure import one_line
    from benchmarks.serve_load import Server

    options = ["--max-batch", "64", "--max-delay-ms", "5", "--threads", str(cfg.threads)]
    options += ["--max-images", str(max(64, *p.batches))]
    rows = []
    try:
        with Server(export, log, *options) as server:
            for b in p.batches:
                model = measured.row("onnxruntime-cpu", res, b)
                rows.append(http_point(server, res, b, p, export, cfg.threads, model))
    except (SystemExit, OSError, RuntimeError, KeyError, ValueError) as exc:
        return ResolutionBench(
            rb_arch(), cfg.threads, http=tuple(rows), failures=(Failure("http", one_line(exc), resolution=res),)
        )
    return ResolutionBench(rb_arch(), cfg.threads, http=tuple(rows))


def bench_resolution(res: int, cfg: Run, p: Plan, tmp: Path) -> ResolutionBench:
    from benchmarks.measure import flops_per_image

    print(f"resolution: {res}x{res}", flush=True)
    g = random_generator(res, cfg.seed)
    module, export_s = export_random(g, res, tmp / f"dcgan-{res}")
    mflop = flops_per_image(g, int(g.z_dim)) / 1e6
    params = sum(t.numel() for t in g.parameters())
    part = ResolutionBench(
        rb_arch(), cfg.threads, models=(ResolutionModel(res, round(mflop, 3), params, round(export_s, 2)),)
    )
    for batch in p.batches:
        part += bench_point(res, batch, module, tmp / f"dcgan-{res}", mflop, cfg, p)
    return part + http_rows(res, tmp / f"dcgan-{res}", cfg, p, part, tmp / f"serve-{res}.log")


def run_resolution(cfg: Run) -> ResolutionBench:
    """Every resolution of the plan; exports and server logs live in a temporary directory removed afterwards."""
    p = plan(cfg)
    result = ResolutionBench(rb_arch(), cfg.threads, p.http_seconds, p.http_requests)
    with tempfile.TemporaryDirectory(prefix="bench-resolution-") as tmp:
        for res in p.resolutions:
            result += bench_resolution(res, cfg, p, Path(tmp))
    return result


# --- report --------------------------------------------------------------------------------------


def _fmt(x: Optional[float], spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _table(head: str, rows: list[str]) -> list[str]:
    return [f"| {head} |", "|" + "---|" * (head.count("|") + 1), *(f"| {r} |" for r in rows), ""]


def cost_table(rb: ResolutionBench) -> list[str]:
    """One row per (resolution, backend, batch), HTTP included: the table README.md quotes."""
    sizes = {m.resolution: m.mflop_per_image for m in rb.models}
    rows = [
        f"{r.resolution}×{r.resolution} | {sizes.get(r.resolution, 0):.1f} | {r.backend} | {r.batch} | "
        f"{r.images_per_s:.0f} | {r.p50_ms:.2f} | {r.gflops:.1f} | {r.cpu_ms_per_image:.3f}"
        for r in rb.rows
    ]
    rows += [
        f"{h.resolution}×{h.resolution} | {sizes.get(h.resolution, 0):.1f} | HTTP ({h.clients} clients) | {h.batch} | "
        f"{h.images_per_s:.0f} | {h.p50_ms:.2f} | {sizes.get(h.resolution, 0) * h.images_per_s / 1e3:.1f} | "
        f"{h.server_cpu_ms_per_image:.3f} (server)"
        for h in rb.http
    ]
    rows.sort(key=lambda line: int(line.split("×", 1)[0]))  # stable: backends keep their order per resolution
    head = "resolution | MFLOP/image | backend | batch | images/s | p50 ms | GFLOP/s | CPU ms/image"
    return _table(head, rows)


def http_table(rb: ResolutionBench) -> list[str]:
    rows = [
        f"{h.resolution}×{h.resolution} | {h.batch} | {h.clients} | {h.mean_model_batch:.1f} | {h.images_per_s:.0f} | "
        f"{_fmt(h.in_process_images_per_s, '.0f')} | "
        f"{_fmt(h.images_per_s / h.in_process_images_per_s if h.in_process_images_per_s else None, '.2f')} | "
        f"{h.server_cpu_ms_per_image:.3f} | {_fmt(h.model_cpu_ms_per_image, '.3f')} | "
        f"{_fmt(h.model_share, '.0%')} | {h.client_cpu_ms_per_image:.3f} | {h.requests} / {h.errors}"
        for h in rb.http
    ]
    head = "resolution | images/request | clients | mean server batch | HTTP images/s | model alone images/s | "
    head += "HTTP / model | server CPU ms/image | model CPU ms/image | model share of server CPU | "
    head += "client CPU ms/image | requests / errors"
    return _table(head, rows)


def dominance(rb: ResolutionBench) -> list[str]:
    """Per request size: where the generator stops (or starts) being the larger part of the server's CPU per image."""
    out = []
    for batch in dict.fromkeys(h.batch for h in rb.http):
        rows = sorted(
            (h for h in rb.http if h.batch == batch and h.model_share is not None), key=lambda h: h.resolution
        )
        if not rows:
            continue
        shares = ", ".join(f"{h.model_share:.0%} at {h.resolution}×{h.resolution}" for h in rows)
        tail = next((i for i in range(len(rows)) if all((h.model_share or 0) >= 0.5 for h in rows[i:])), None)
        if tail is None:
            verdict = "HTTP, JSON and PNG encoding cost the server more CPU than the generator at every resolution here"
        elif tail == 0:
            verdict = "the generator is the dominant cost at every resolution here"
        else:
            a, b = rows[tail - 1].resolution, rows[tail].resolution
            verdict = (
                f"up to {a}×{a} HTTP, JSON and PNG encoding cost the server more CPU per image than the generator; "
                f"from {b}×{b} the generator is the dominant cost"
            )
        out.append(
            f"- {batch} image(s) per request: the model's share of the server's CPU per image is {shares}: {verdict}."
        )
    return out + [""] if out else []


def markdown(rb: ResolutionBench) -> list[str]:
    arch = ", ".join(f"{k} {v}" for k, v in rb.arch.items() if k != "kind")
    models = [
        f"{m.resolution}×{m.resolution} | {m.mflop_per_image:.1f} | {m.parameters:,} | {m.export_seconds:.1f}"
        for m in rb.models
    ]
    lines = [
        "## Cost against resolution",
        "",
        NOTE.format(arch=arch, threads=rb.threads, seconds=rb.http_seconds, requests=rb.http_requests),
        "",
    ]
    lines += _table("resolution | MFLOP/image | parameters | export s", models)
    lines += cost_table(rb) + ["Where the time goes in the service:", ""] + http_table(rb) + dominance(rb)
    if rb.failures:
        rows = [f"{f.name} | {_fmt(f.resolution, 'd')} | {_fmt(f.batch, 'd')} | {f.reason}" for f in rb.failures]
        lines += ["Not measured:", "", *_table("backend | resolution | batch | reason", rows)]
    return lines


def plot(rb: ResolutionBench, path: Path) -> Path:
    """images/s and GFLOP/s against resolution, a line per (backend, batch), HTTP included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from feature_unlearn.unlearn.io import atomic_write

    mflop = {m.resolution: m.mflop_per_image for m in rb.models}
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rb.rows:
        series.setdefault(f"{r.backend}, batch {r.batch}", []).append((r.resolution, r.images_per_s, r.gflops))
    for h in rb.http:
        gflops = mflop.get(h.resolution, 0) * h.images_per_s / 1e3
        series.setdefault(f"HTTP, {h.batch}/request", []).append((h.resolution, h.images_per_s, gflops))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, points in series.items():
        points.sort()
        style = "--" if label.endswith((", batch 1", ", 1/request")) else "-"
        for ax, k in zip(axes, (1, 2), strict=True):
            ax.plot([p[0] for p in points], [p[k] for p in points], style, marker="o", label=label)
    for ax, ylabel in zip(axes, ("images/s", "GFLOP/s"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(mflop), [f"{r}²" for r in sorted(mflop)])
        ax.set(xlabel="resolution", ylabel=ylabel, yscale="log" if ylabel == "images/s" else "linear")
    axes[0].set_title("throughput (dashed: batch 1)")
    axes[1].set_title("achieved GFLOP/s")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
