"""``export_model``: the one function behind ``unlearn-cli export``.

Order: refuse what cannot work (existing --out, --tensorrt without a GPU, a guard without a
target vector) before any work; export to a temporary name; full check; validate against
PyTorch; build the engine; stamp the manifest; rename into place; then the Triton entries.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import onnx

from feature_unlearn.export import fp16 as fp16_check
from feature_unlearn.export import onnx_export, tensorrt, triton, validate
from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.manifest import build_manifest
from feature_unlearn.export.module import build_module
from feature_unlearn.export.publish import refuse_existing, replace_dir, staging
from feature_unlearn.export.selftest import build_self_test
from feature_unlearn.export.source import Source, guard_mode, load_source, safe_name
from feature_unlearn.export.spec import ExportConfig, ExportSpec
from feature_unlearn.serve.manifest import FILES, Manifest
from feature_unlearn.serve.selftest import SelfTestError, verify
from feature_unlearn.unlearn.errors import ConfigError
from feature_unlearn.unlearn.guard import guard_from_record
from feature_unlearn.unlearn.imagecheck import ImageCheck, image_check_for_run, labeller_of_run
from feature_unlearn.unlearn.io import sha256_file, write_json
from feature_unlearn.unlearn.zoo import load_generator_with_meta


def _preflight(cfg: ExportConfig) -> None:
    refuse_existing(cfg.out, cfg.force, "--out")
    if cfg.triton is not None:
        name = safe_name(cfg.triton_name) if cfg.triton_name else None
        if name is not None:
            refuse_existing(cfg.triton / name, cfg.force, "--triton")
    if cfg.tensorrt:
        tensorrt.require_tensorrt()


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


def _build(cfg: ExportConfig, tmp: Path) -> Manifest:
    """Everything inside the staging directory; returns the manifest as written to manifest.json."""
    spec, started = cfg.spec, time.perf_counter()
    source = load_source(cfg.source, cfg.trust_code)
    mode = guard_mode(cfg.guard, source)
    check, check_figures = _image_check(cfg, source)
    spec = spec.with_image_check() if check is not None else spec
    module = build_module(source.generator, source.guard, mode, fp16=cfg.fp16, check=check)
    model = onnx_export.to_onnx(module, spec)
    graph_bytes = model.graph.SerializeToString()
    fp16_ops = fp16_check.check_fp16(model, spec) if cfg.fp16 else None
    candidate = tmp / "model.onnx.tmp"
    onnx_export.save(model, candidate)
    reference = build_module(source.generator, source.guard, mode, check=check) if cfg.fp16 else module
    report = validate.validate(candidate, reference, spec, fp16=cfg.fp16)
    precision = "fp16" if cfg.fp16 else "fp32"
    self_test = build_self_test(source.generator, source.guard, module.z_dim, precision, spec)
    manifest = build_manifest(source, module, model, spec, cfg.fp16, self_test)
    info = {**manifest.info, "validation": {**report, "fp16_ops": fp16_ops}}
    if check is not None:
        info["image_check"] = {"features": list(check.cfg.features), "outputs": list(spec.output_names[3:])}
        info["image_check"] |= check_figures
    if cfg.tensorrt:
        info["tensorrt"] = tensorrt.build_engine(
            candidate, tmp / "model.plan", spec, module.z_dim, tmp / "timing.cache"
        )
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    manifest = dataclasses.replace(manifest, info=info)
    onnx_export.stamp(model, manifest.embedded().to_json())
    onnx_export.save(model, candidate)
    if onnx.load_model(str(candidate)).graph.SerializeToString() != graph_bytes:
        raise ExportError("the stamped model.onnx no longer matches the validated graph")
    candidate.rename(tmp / "model.onnx")
    manifest = dataclasses.replace(manifest, files={n: sha256_file(tmp / n) for n in FILES if (tmp / n).is_file()})
    _self_check(tmp / "model.onnx", manifest, spec)
    write_json(tmp / "manifest.json", manifest.to_json())
    return manifest


def _self_check(path: Path, manifest: Manifest, spec: ExportSpec) -> None:
    """The artifact must pass the runtime's own load-time self-test before it is published."""
    sess = validate.session(path)
    guard_outputs = list(spec.output_names[:3])
    try:
        verify(lambda z: tuple(sess.run(guard_outputs, {spec.input_name: z})), manifest, str(path))  # type: ignore[arg-type,return-value]
    except SelfTestError as exc:
        raise ExportError(f"the exported graph fails its own self-test: {exc}") from None


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """Export, validate and publish ``cfg.out`` (and ``cfg.triton`` entries); returns a summary."""
    _preflight(cfg)
    out = Path(cfg.out)
    with staging(out) as tmp:
        manifest = _build(cfg, tmp)
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
