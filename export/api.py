"""``export_model``: the one function behind ``unlearn-cli export``.

Order: refuse what cannot work (existing --out, --tensorrt without a GPU, a guard without a
target vector) before any work; export to a temporary name; full check; validate against
PyTorch; build the engine; stamp the manifest; rename into place; then the Triton entries.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import onnx
import torch

from feature_unlearn.export import bf16, bf16_graph, gates, int8, onnx_export, tensorrt, triton, validate
from feature_unlearn.export import fp16 as fp16_check
from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.manifest import build_manifest
from feature_unlearn.export.module import ExportModule, build_module
from feature_unlearn.export.precision import BACKENDS, REDUCED, calibration_latents, resolve_precision
from feature_unlearn.export.publish import refuse_existing, replace_dir, staging
from feature_unlearn.export.selftest import build_self_test, selftest_tolerance
from feature_unlearn.export.source import Source, guard_mode, load_source, safe_name
from feature_unlearn.export.spec import ExportConfig, ExportSpec
from feature_unlearn.serve.backends import load_program, program_files
from feature_unlearn.serve.manifest import FILES, Manifest
from feature_unlearn.serve.runtime import ModelLoadError, SafeGenerator
from feature_unlearn.serve.selftest import SelfTestError
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.guard import guard_from_record
from feature_unlearn.unlearn.imagecheck import ImageCheck, image_check_for_run, labeller_of_run
from feature_unlearn.unlearn.io import sha256_file, write_json
from feature_unlearn.unlearn.zoo import load_generator_with_meta


def _preflight(cfg: ExportConfig) -> str:
    """Refuse what cannot work before any work; returns the one precision this export runs at."""
    precision = resolve_precision(cfg.precision, cfg.fp16, cuda=torch.cuda.is_available())
    refuse_existing(cfg.out, cfg.force, "--out")
    if cfg.gate_samples < 1:
        raise ConfigError(f"--gate-samples {cfg.gate_samples}: must be at least 1")
    if precision == "bf16" and cfg.triton is not None and not cfg.tensorrt:
        raise ConfigError(
            "--precision bf16 --triton: Triton serves bf16 as a TensorRT engine; add --tensorrt (the bf16 program "
            "runs on PyTorch, which Triton's onnxruntime backend cannot)"
        )
    if precision == "int8" and cfg.tensorrt:
        raise ConfigError("--precision int8 with --tensorrt: int8 engines are not built yet; use fp16 or fp32")
    if cfg.triton is not None:
        name = safe_name(cfg.triton_name) if cfg.triton_name else None
        if name is not None:
            refuse_existing(cfg.triton / name, cfg.force, "--triton")
    if cfg.tensorrt:
        tensorrt.require_tensorrt()
    return precision


def _image_check(cfg: ExportConfig, source: Source) -> tuple[Optional[ImageCheck], dict[str, Any]]:
    """--image-check: the run's distilled check (``unlearn.imagecheck``), or none."""
    if not cfg.image_check:
        return None, {}
    record = source.meta.record
    if source.guard is None or record.base_model is None or source.path.name != "generator":
        raise ConfigError(
            f"--image-check: {cfg.source} is not a fit run directory (the check is distilled for a run's removed "
            "feature from its labeller)"
        )
    f, _ = load_generator_with_meta(record.base_model, cfg.trust_code)
    run = source.path.parent
    labeller = labeller_of_run(run, record.dataset)
    guard = guard_from_record(source.guard)
    return image_check_for_run(
        run, f, source.generator, guard, record.features, labeller, source.meta.sha256, trust_code=cfg.trust_code
    )


@dataclass(frozen=True)
class Built:
    """The staged artifact before its manifest: the graph, the modules behind it, how to run it."""

    model: onnx.ModelProto  # model.onnx (for bf16 the fp32 graph; the program is beside it)
    module: ExportModule  # what the artifact runs (reduced generator)
    reference: ExportModule  # the fp32 PyTorch reference
    run: validate.Runner  # the artifact as the runtime will run it
    info: dict[str, Any]


def _graph(
    cfg: ExportConfig, precision: str, module: ExportModule, reference: ExportModule
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """model.onnx: the reduced graph (fp16, int8) or the fp32 one (fp32, and bf16 whose program runs instead)."""
    spec = _spec(cfg, module)
    if precision == "bf16":
        return onnx_export.to_onnx(reference, spec), {}
    model = onnx_export.to_onnx(module, spec)
    if precision == "fp16":
        return model, {"fp16_ops": fp16_check.check_fp16(model, spec)}
    if precision == "int8":
        z = calibration_latents(cfg.calibration, module.z_dim, spec.seed + 7)
        model, info = int8.quantize(model, spec.input_name, z)
        onnx_export.check(model, spec, module.z_dim)
        return model, {"int8": info}
    return model, {}


def _spec(cfg: ExportConfig, module: ExportModule) -> ExportSpec:
    return cfg.spec.with_image_check() if module.check is not None else cfg.spec


def _stage(cfg: ExportConfig, precision: str, source: Source, mode: str, tmp: Path) -> Built:
    check, check_figures = _image_check(cfg, source)
    module = build_module(source.generator, source.guard, mode, check=check, precision=precision)
    reference = build_module(source.generator, source.guard, mode, check=check) if precision != "fp32" else module
    model, info = _graph(cfg, precision, module, reference)
    candidate = tmp / "model.onnx.tmp"
    onnx_export.save(model, candidate)
    run = validate.onnx_runner(candidate)
    if precision == "bf16":
        info["program"] = bf16.save_program(module, _spec(cfg, module), tmp)
        run = _program_runner(tmp, module.z_dim, _spec(cfg, module))
        info["program"] |= bf16.crossover(run, validate.onnx_runner(candidate), module.z_dim)
    if check is not None:
        spec = _spec(cfg, module)
        info["image_check"] = {"features": list(check.cfg.features), "outputs": list(spec.output_names[3:])}
        info["image_check"] |= check_figures
    return Built(model, module, reference, run, info)


def _program_runner(tmp: Path, z_dim: int, spec: ExportSpec) -> validate.Runner:
    """The staged bf16 program, rebuilt by the runtime's own loader (what serving will run)."""
    program, weights = program_files(tmp)
    run = load_program(program.read_bytes(), weights.read_bytes(), z_dim)
    return lambda z: run(spec.output_names, z)


def _gates(cfg: ExportConfig, precision: str, built: Built, source: Source) -> dict[str, Any]:
    """Reduced precisions: the auditor's rates and FID against the fp32 graph of the same export."""
    if precision not in REDUCED:
        return {}
    spec = _spec(cfg, built.module)
    fp32_model = built.model if precision == "bf16" else onnx_export.to_onnx(built.reference, spec)
    fp32_run = validate.onnx_runner(fp32_model)
    figures = gates.measure(
        lambda z: fp32_run(z)[0], lambda z: built.run(z)[0], source, built.module.z_dim, cfg.gate_samples, precision
    )
    return gates.decide(figures, precision, spec)


def _engine(precision: str, built: Built, source: Source, mode: str, spec: ExportSpec, tmp: Path) -> dict[str, Any]:
    """model.plan from the validated graph; for bf16 from the bf16 graph (``export.bf16_graph``), kept beside it."""
    if precision != "bf16":
        engine = tensorrt.build_engine(tmp / "model.onnx.tmp", tmp / "model.plan", spec, built.module.z_dim, tmp)
        return {"graph": "model.onnx", **engine}
    half = build_module(source.generator, source.guard, mode, fp16=True, check=built.module.check)
    model, figures = bf16_graph.to_bf16_graph(onnx_export.to_onnx(half, spec), built.model, spec)
    figures["validation"] = bf16_graph.validate_bf16_graph(model, built.reference, spec)
    onnx_export.save(model, tmp / bf16_graph.GRAPH_FILE)
    engine = tensorrt.build_engine(tmp / bf16_graph.GRAPH_FILE, tmp / "model.plan", spec, built.module.z_dim, tmp)
    return {"graph": bf16_graph.GRAPH_FILE, **engine, "bf16_graph": figures}


def _build(cfg: ExportConfig, precision: str, tmp: Path) -> Manifest:
    """Everything inside the staging directory; returns the manifest as written to manifest.json."""
    started = time.perf_counter()
    source = load_source(cfg.source, cfg.trust_code)
    mode = guard_mode(cfg.guard, source)
    built = _stage(cfg, precision, source, mode, tmp)
    spec = _spec(cfg, built.module)
    report = validate.validate(built.run, built.reference, spec, precision=precision, backend=BACKENDS[precision])
    gate = _gates(cfg, precision, built, source)
    tolerance = selftest_tolerance(built.run, source, built.module.z_dim, mode, precision, spec)
    self_test = build_self_test(source.generator, source.guard, built.module.z_dim, precision, spec, tolerance)
    manifest = build_manifest(source, built.module, built.model, spec, precision, self_test)
    extra = dict(built.info)
    report |= {"fp16_ops": extra.pop("fp16_ops")} if "fp16_ops" in extra else {}  # where fp16 exports kept it
    info = {**manifest.info, **extra, "validation": report, **({"quality_gate": gate} if gate else {})}
    if cfg.tensorrt:
        info["tensorrt"] = _engine(precision, built, source, mode, spec, tmp)
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    return _publish(dataclasses.replace(manifest, info=info), built.model, spec, tmp)


def _publish(manifest: Manifest, model: onnx.ModelProto, spec: ExportSpec, tmp: Path) -> Manifest:
    """Stamp the manifest into the graph, hash every file, self-test, write manifest.json."""
    graph_bytes = model.graph.SerializeToString()
    candidate = tmp / "model.onnx.tmp"
    onnx_export.stamp(model, manifest.embedded().to_json())
    onnx_export.save(model, candidate)
    if onnx.load_model(str(candidate)).graph.SerializeToString() != graph_bytes:
        raise ExportError("the stamped model.onnx no longer matches the validated graph")
    candidate.rename(tmp / "model.onnx")
    manifest = dataclasses.replace(manifest, files={n: sha256_file(tmp / n) for n in FILES if (tmp / n).is_file()})
    write_json(tmp / "manifest.json", manifest.to_json())
    _self_check(tmp)
    return manifest


def _self_check(tmp: Path) -> None:
    """The staged artifact must load in the runtime, self-test included, before it is published.

    No ``threads``: a bf16 program would set torch's process-wide thread count, and export runs inside other
    programs (the bench, a user's script)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            SafeGenerator.load(tmp, providers="cpu")
    except (ModelLoadError, SelfTestError) as exc:
        raise ExportError(f"the exported artifact fails the runtime's own load-time self-test: {exc}") from None


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """Export, validate and publish ``cfg.out`` (and ``cfg.triton`` entries); returns a summary."""
    precision = _preflight(cfg)
    out = Path(cfg.out)
    with staging(out) as tmp:
        manifest = _build(cfg, precision, tmp)
        staged: dict[str, Path] = {}
        repo = cfg.triton
        if repo is not None:
            staged = triton.stage_repository(
                repo, safe_name(cfg.triton_name or manifest.name), tmp, manifest.to_json(), cfg.spec
            )
        try:
            for final in staged:  # the entry and, with an engine, its "-trt" twin
                assert repo is not None
                refuse_existing(repo / final, cfg.force, "--triton")
            replace_dir(tmp, out)
            for final, staged_dir in staged.items():
                assert repo is not None
                replace_dir(staged_dir, repo / final)
        finally:
            for staged_dir in staged.values():
                shutil.rmtree(staged_dir, ignore_errors=True)
    files = sorted(p.name for p in out.iterdir())
    return {
        "out": str(out),
        "files": files,
        "triton": sorted(str(repo / n) for n in staged) if repo and staged else None,
        "guard": manifest.guard.mode,
        "precision": manifest.precision,
        "export_seconds": manifest.info["export_seconds"],
        "sha256": manifest.files,
        "validation": manifest.info["validation"]["cases"],
    }
