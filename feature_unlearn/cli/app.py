"""``unlearn-cli``: thin typer commands that parse flags, build a config and call one function."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from feature_unlearn.unlearn.errors import UserError
from feature_unlearn.unlearn.fit.config import default as _fit_default

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Remove features from pre-trained image generators.")
F = TypeVar("F", bound=Callable[..., Any])
# Top-level modules that come with an extra rather than the base install.
EXTRAS = {"torch": "train", "pytorch_msssim": "train", "safetensors": "train", "mlxtend": "train", "torchmetrics": "train",
          "sklearn": "train", "matplotlib": "train", "tqdm": "train", "onnx": "onnx", "onnxscript": "onnx",
          "onnxruntime": "runtime", "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve"}  # fmt: skip


def user_errors(fn: F) -> F:
    """Turn a UserError into one line on stderr and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # a runtime-only install has no torch
            if (exc.name or "").split(".")[0] not in EXTRAS:
                raise
            extra = EXTRAS[(exc.name or "").split(".")[0]]
            typer.echo(f"error: this command needs {exc.name}: pip install 'feature-unlearn[{extra}]'", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _threads(n: Optional[int]) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


@app.command()
@user_errors
def zoo(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """List the shipped models with their measured metrics."""
    from feature_unlearn.unlearn.zoo import zoo_table

    rows = zoo_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':28} {'kind':10} {'arch':7} {'size':>7}  metrics")
    for r in rows:
        m = r["metrics"]
        summary = (
            " ".join(f"{k}={v:.3f}" for k, v in m.get("heldout_accuracy", {}).items())
            or f"fid={m.get('fid_heldout')} " + " ".join(f"{k}={v:.3f}" for k, v in m.get("generated_rates", {}).items() if "=" not in k)
        )
        typer.echo(f"{r['name']:28} {r['kind']:10} {r['arch']:7} {r['size_kb']:>5}KB  {summary}")


@app.command()
@user_errors
def pretrain(
    dataset: Optional[str] = typer.Option(None, help="mnist, faces or folder:PATH."),
    model: Optional[str] = typer.Option(None, help="vae, dcgan, labeller or auditor."),
    exclude: Optional[str] = typer.Option(None, help="Train an oracle without this binary attribute."),
    recipe: Optional[str] = typer.Option(None, help="Reproduce a zoo entry exactly (e.g. mnist-vae)."),
    out: Path = typer.Option(..., help="Output directory."),
    epochs: Optional[int] = typer.Option(None, min=1),
    seed: Optional[int] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, min=16, help="Use only the first N images."),
    auditor: Optional[str] = typer.Option(None, help="Classifier for metrics (default: the zoo auditor)."),
    eval_samples: int = typer.Option(10_000, min=100),
    threads: Optional[int] = typer.Option(None, min=1),
) -> None:
    """Train a generator or classifier from scratch (the zoo's recipes by default)."""
    from feature_unlearn.unlearn.pretrain.recipes import resolve_recipe
    from feature_unlearn.unlearn.pretrain.run import PretrainConfig
    from feature_unlearn.unlearn.pretrain.run import pretrain as run

    _threads(threads)
    base = resolve_recipe(recipe, dataset, model, exclude)
    train = dataclasses.replace(base.train, **{k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None})
    cfg = PretrainConfig(
        dataset=base.dataset, model=base.model, exclude=base.exclude, out=out, train=train, limit=limit,
        auditor=auditor, eval_samples=eval_samples,
    )  # fmt: skip
    metrics = run(cfg)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
@user_errors
def collect(
    model: str = typer.Option("faces-dcgan", help="Zoo name, checkpoint or run directory."),
    feature: list[str] = typer.Option([], "--feature", help="Feature(s) to label (default: the dataset's default)."),
    n: int = typer.Option(5000, min=2, help="Number of samples."),
    seed: int = typer.Option(0),
    sheet: bool = typer.Option(False, "--sheet", help="Write numbered contact sheets for a person to label."),
    labels: Optional[Path] = typer.Option(None, help="A person's positive tile numbers (beside the sheets' latents)."),
    labeller: Optional[str] = typer.Option(None, help="Labelling classifier (default: the zoo's <dataset>-labeller)."),
    out: Path = typer.Option(..., help="Output directory."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow a checkpoint built by a module:factory to import and run that code."),
) -> None:
    """Sample latents, generate and label them (labeller or a person's contact-sheet labels)."""
    from feature_unlearn.unlearn.collect import CollectConfig, run_collect

    stats = run_collect(CollectConfig(model, tuple(feature), n, seed, sheet, labels, labeller, out, trust_code))
    typer.echo(json.dumps(stats, indent=2))


@app.command()
@user_errors
def fit(
    model: str = typer.Option(_fit_default("model"), help="Zoo name or checkpoint of the pre-trained generator."),
    feature: list[str] = typer.Option([], "--feature", help="Feature to remove; repeat for several."),
    out: Path = typer.Option(Path("runs/fit"), help="Run directory."),
    steps: int = typer.Option(_fit_default("steps"), min=1, help="Step budget over all rounds."),
    steps_per_round: int = typer.Option(_fit_default("steps_per_round"), min=1, help="Steps before re-collecting on the current g."),
    alpha: float = typer.Option(_fit_default("alpha"), min=0.0, help="Weight of the unlearning terms."),
    lr: float = typer.Option(_fit_default("lr"), min=0.0),
    batch: int = typer.Option(_fit_default("batch"), min=2, help="Global batch (split across torchrun processes)."),
    target_frac: float = typer.Option(_fit_default("target_frac"), help="Share of each batch drawn from target latents."),
    direction: str = typer.Option(_fit_default("direction"), help="mean (paper) or logreg."),
    threshold: str = typer.Option(_fit_default("threshold"), help="pooled (paper), midpoint, recall or f1."),
    target_recall: float = typer.Option(_fit_default("target_recall"), help="Recall kept by --threshold recall."),
    n_collect: int = typer.Option(_fit_default("n_collect"), min=10, help="Samples labelled per round."),
    goal: float = typer.Option(_fit_default("goal"), min=0.0, max=1.0, help="Stop when the labeller's target rate reaches this."),
    round_flag_budget: float = typer.Option(_fit_default("round_flag_budget"), min=0.0, max=1.0, help="Most a later round's direction may flag."),
    labels: Optional[Path] = typer.Option(None, help="A person's positives file from collect --sheet."),
    labeller: Optional[str] = typer.Option(None),
    seed: int = typer.Option(_fit_default("seed")),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the generator."),
    precision: str = typer.Option(_fit_default("precision"), help="fp32, bf16 or fp16 (CUDA only)."),
    device: str = typer.Option(_fit_default("device")),
    checkpoint_every: int = typer.Option(_fit_default("checkpoint_every"), min=1),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow a checkpoint built by a module:factory to import and run that code."),
    threads: Optional[int] = typer.Option(None, min=1),
) -> None:
    """Unlearn a feature from a pre-trained generator (Moon, Cho & Kim, 2024)."""
    from feature_unlearn.unlearn.fit import FitConfig
    from feature_unlearn.unlearn.fit.run import fit as run

    _threads(threads)
    cfg = FitConfig(
        out=out, model=model, features=tuple(feature), steps=steps, steps_per_round=steps_per_round, alpha=alpha,
        lr=lr, batch=batch, target_frac=target_frac, direction=direction, threshold=threshold,
        target_recall=target_recall, n_collect=n_collect, goal=goal, round_flag_budget=round_flag_budget, labeller=labeller, labels=labels, seed=seed,
        compile=compile, precision=precision, device=device, checkpoint_every=checkpoint_every, resume=resume, force=force,
        trust_code=trust_code,
    )  # fmt: skip
    metrics = run(cfg)
    if metrics:
        typer.echo(json.dumps(metrics, indent=2))


@app.command()
@user_errors
def evaluate(
    run: Path = typer.Argument(..., help="A fit run directory."),
    attack: bool = typer.Option(False, "--attack", help="Also run the latent-space PGD attack."),
    n: int = typer.Option(10_000, min=100, help="Random latents per model."),
    seed: int = typer.Option(0),
    eps: float = typer.Option(0.5, min=0.0, help="PGD radius per latent coordinate."),
    attack_steps: int = typer.Option(20, min=1),
    attack_starts: int = typer.Option(512, min=1),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the JSON here."),
    auditor: Optional[str] = typer.Option(None),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow a checkpoint built by a module:factory to import and run that code."),
    threads: Optional[int] = typer.Option(None, min=1),
) -> None:
    """Grade a fit run with the independent auditor: rates, FID, preservation, flips, attack."""
    from feature_unlearn.unlearn.attack import AttackConfig
    from feature_unlearn.unlearn.evaluate import EvalConfig, markdown, run_evaluate

    _threads(threads)
    cfg = EvalConfig(run=run, n=n, seed=seed, attack=attack, attack_cfg=AttackConfig(eps=eps, steps=attack_steps, starts=attack_starts), auditor=auditor,
                     trust_code=trust_code)  # fmt: skip
    typer.echo(markdown(run_evaluate(cfg, as_json)))


@app.command("export")
@user_errors
def export_cmd(
    source: str = typer.Argument(..., help="Fit run directory, zoo id (e.g. faces-dcgan) or checkpoint path."),
    out: Path = typer.Option(..., help="Output directory: model.onnx + manifest.json (refused if it exists)."),
    guard: Optional[str] = typer.Option(None, help="shift, flag or off (default: shift for a fit run, off for a zoo id)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision generator (for GPUs); the guard stays fp32."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build DIR/model.plan (needs CUDA and tensorrt)."),
    triton: Optional[Path] = typer.Option(None, help="Also write a Triton model repository entry under this directory."),
    triton_name: Optional[str] = typer.Option(None, help="Model name in the Triton repository (default: the source's name)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (and Triton entry)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow a checkpoint built by a module:factory to import and run that code."),
    threads: Optional[int] = typer.Option(None, min=1),
) -> None:
    """Export a generator behind its latent guard to validated ONNX (+ fp16, TensorRT, Triton)."""
    from feature_unlearn.export import ExportConfig, export_model  # lazy: unlearn never imports export at module level

    _threads(threads)
    cfg = ExportConfig(source=source, out=out, guard=guard, fp16=fp16, tensorrt=tensorrt, triton=triton,
                       triton_name=triton_name, force=force, trust_code=trust_code)  # fmt: skip
    typer.echo(json.dumps(export_model(cfg), indent=2))


@app.command("serve")
@user_errors
def serve_cmd(
    artifact: Path = typer.Argument(..., help="An export directory (model.onnx + manifest.json) or a model.onnx."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535),
    max_batch: int = typer.Option(64, min=1, help="Images per model call when merging concurrent requests."),
    max_delay_ms: float = typer.Option(5.0, min=0.0, help="How long a request may wait for others to batch with."),
    workers: int = typer.Option(1, min=1, help="Processes, each with its own model and metrics."),
    max_images: int = typer.Option(64, min=1, help="Images per request."),
    max_body_bytes: int = typer.Option(1 << 20, min=1, help="Request body limit."),
    timeout_s: float = typer.Option(30.0, min=0.001, help="Per-request limit on receiving the body, and on queueing + generation."),
    max_queue: int = typer.Option(4096, min=1, help="Images waiting for the model before requests get 503."),
    threads: Optional[int] = typer.Option(None, min=1, help="ONNX Runtime threads (default: cores - 1; one is left for HTTP)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or tensorrt."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    pin: Optional[str] = typer.Option(None, help="Refuse any model.onnx whose sha256 is not this one (keep the digest out of band)."),
    header_timeout_s: float = typer.Option(10.0, min=0.001, help="Close a connection whose request head has not arrived within this."),
    max_connections: int = typer.Option(1000, min=1, help="Open connections above which requests get a JSON 503."),
) -> None:
    """Serve an exported guarded generator over HTTP (no torch; bearer auth from $UNLEARN_SERVE_TOKEN)."""
    from feature_unlearn.serve.config import (
        ServeConfig,  # lazy, and torch-free: the serving process never imports torch
    )
    from feature_unlearn.serve.errors import ServeError
    from feature_unlearn.serve.http import run_server
    from feature_unlearn.unlearn.errors import ConfigError

    try:
        run_server(ServeConfig(artifact=artifact, host=host, port=port, max_batch=max_batch, max_delay_ms=max_delay_ms,
                               workers=workers, max_images=max_images, max_body_bytes=max_body_bytes, timeout_s=timeout_s,
                               max_queue=max_queue, threads=threads, device=device, access_log=access_log, pin=pin,
                               header_timeout_s=header_timeout_s, max_connections=max_connections))  # fmt: skip
    except ServeError as exc:
        raise ConfigError(str(exc)) from None


@app.command()
@user_errors
def bench(
    quick: bool = typer.Option(False, "--quick", help="≤ 5-minute smoke run: mnist models, batches 1/64, tiny fit."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Results JSON (default: OUT/results.json)."),
    out: Optional[Path] = typer.Option(None, help="RESULTS.md and plots (default: benchmarks/, or runs/bench-quick/ with --quick)."),
    work: Optional[Path] = typer.Option(None, help="Fit runs of the unlearning table (default: runs/bench)."),
    model: list[str] = typer.Option([], "--model", help="Generators for the inference section (repeat; default: the four base ones)."),
    batch: list[int] = typer.Option([], "--batch", help="Batch sizes (repeat; default 1, 16, 64, 256)."),
    skip_inference: bool = typer.Option(False, "--skip-inference"),
    skip_fit: bool = typer.Option(False, "--skip-fit", help="Skip fit speed (precisions, compile, DDP)."),
    skip_unlearning: bool = typer.Option(False, "--skip-unlearning", help="Skip the fit + evaluate table."),
    skip_serve: bool = typer.Option(False, "--skip-serve", help="Skip the HTTP load test."),
    skip_memory: bool = typer.Option(False, "--skip-memory"),
    report_only: bool = typer.Option(False, "--report-only", help="Rebuild RESULTS.md, plots and targets from --json; measure nothing."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch and ONNX Runtime threads (default: all cores)."),
) -> None:
    """Benchmark inference backends, fit speed and unlearning quality in one run (JSON, RESULTS.md, plots)."""
    from benchmarks.config import BASE_GENERATORS, make_config
    from benchmarks.harness import rerender, run_bench
    from feature_unlearn.unlearn.errors import ConfigError

    unknown = [m for m in model if m not in BASE_GENERATORS]
    if unknown:
        raise ConfigError(f"--model {unknown[0]!r}: choose from {', '.join(BASE_GENERATORS)}")
    if any(b < 1 for b in batch):
        raise ConfigError("--batch must be ≥ 1")
    off = {k: False for k, skip in (("inference", skip_inference), ("fit", skip_fit), ("unlearning", skip_unlearning),
                                    ("serve", skip_serve), ("memory", skip_memory)) if skip}  # fmt: skip
    cfg = make_config(quick, json_path=as_json, out=out, work=work, models=tuple(model) or None,
                      batches=tuple(sorted(set(batch))) or None, threads=threads, **off)  # fmt: skip
    if report_only:
        rerender(cfg)
        typer.echo(f"rebuilt {cfg.out / 'RESULTS.md'} from {cfg.results_json}")
        return
    res = run_bench(cfg, command=" ".join(["unlearn-cli", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "unlearn-cli bench")
    met = [t for t in res.get("targets", []) if t["met"] is not None]
    typer.echo(f"wrote {cfg.results_json} and {cfg.out / 'RESULTS.md'}; targets met: {sum(t['met'] for t in met)}/{len(met)}")


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
