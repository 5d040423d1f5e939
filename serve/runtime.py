"""The torch-free runtime: an exported model.onnx (+ manifest.json) on ONNX Runtime.

Imports numpy and onnxruntime only, never ``unlearn`` or ``export``, and torch only to run a
bf16 artifact (``serve.backends``, imported on load): production images stay small and the
guard cannot be skipped because it is inside the graph (or the program) the manifest authenticates.

    gen = SafeGenerator.load("exported/")      # a directory or a model.onnx
    out = gen.generate(n=16, seed=0)           # out.images uint8 [16, H, W, C], out.flagged, out.scores
    gen.provider                               # the execution provider that actually runs

Thread safety: after ``load`` nothing is mutated; ``InferenceSession.run`` is safe to call
from several threads, and unseeded sampling uses a fresh generator per call.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnxruntime as ort

from feature_unlearn.serve.artifact import Artifact, ArtifactError, open_artifact, same_manifest
from feature_unlearn.serve.backends import (
    PROGRAM,
    PROGRAM_WEIGHTS,
    BackendError,
    Run,
    load_program,
    onnx_runner,
    routed,
)
from feature_unlearn.serve.manifest import Manifest
from feature_unlearn.serve.policy import RowSource, check_policy, enforce
from feature_unlearn.serve.selftest import SelfTestError, VerifiedGuard, verify

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "gpu": CUDA, "cpu": CPU}
DEFAULT_MAX_BATCH = 1024
# Largest |z_i| a request may carry. N(0, I) draws stay within ±7; 1e4 keeps p(z) = z·û and every
# activation finite in float32 (a ±3.4e38 latent overflowed p(z) to inf), and covers export
# validation's large-norm cases (×1000 of N(0, I)).
LATENT_BOUND = 1e4
CHECK_OUTPUTS = ("image_flagged", "image_score")  # the graph's image check (export --image-check)
TORCH_BF16 = "PyTorch-CPU-bf16"  # the provider a bf16 artifact reports (serve.backends.load_program)


class RuntimeInputError(ValueError):
    """A request the model cannot serve: wrong dtype, shape, NaN, batch out of range."""


class ModelLoadError(RuntimeError):
    """The model file or its manifest is missing, corrupt, or not an exported guarded generator."""


class ImageRejectedError(RuntimeInputError):
    """The image check flagged an image and the policy is ``reject`` (HTTP 422)."""


@dataclass(frozen=True)
class GenerateResult:
    images: np.ndarray  # uint8 [N, H, W, C]
    flagged: np.ndarray  # bool [N]: the latent held the removed feature (p(z) > t)
    scores: np.ndarray  # float32 [N]: p(z)
    z: np.ndarray  # float32 [N, z_dim]: the latents used (a resampled row's new latent)
    provider: str  # the execution provider that ran
    # with an image check (export --image-check): its flag and logit per returned row, and what the
    # policy did (pass, resampled, blanked, rejected); None without one
    image_flagged: Optional[np.ndarray] = None
    image_scores: Optional[np.ndarray] = None
    actions: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.images)


def resolve_providers(providers: Union[str, Sequence[str]] = "auto") -> list[str]:
    """'auto': TensorRT -> CUDA -> CPU, those this onnxruntime build has; else names or aliases, CPU last."""
    available = ort.get_available_providers()
    if isinstance(providers, str) and providers == "auto":
        return [p for p in PREFERENCE if p in available] or [CPU]
    names = [providers] if isinstance(providers, str) else list(providers)
    chosen = [ALIASES.get(p.lower(), p) for p in names]
    missing = [p for p in chosen if p not in available]
    if missing:
        raise ModelLoadError(
            f"execution provider(s) {missing} not in this onnxruntime build (available: {available}); "
            "for GPUs install onnxruntime-gpu *instead of* onnxruntime"
        )
    return chosen + ([CPU] if CPU not in chosen else [])


def _session(model: bytes, onnx_path: Path, providers: list[str], threads: Optional[int]) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cache = Path(tempfile.gettempdir()) / "feature-unlearn-trt-cache"
    with_options: list[Any] = [
        (p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}) if p == TENSORRT else p
        for p in providers
    ]
    try:
        return ort.InferenceSession(model, opts, providers=with_options)
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, InvalidGraph, Fail, NoSuchFile, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(
            f"{onnx_path}: ONNX Runtime cannot load it; corrupt or not an ONNX model ({first[:300]})"
        ) from None


def _check_graph(session: ort.InferenceSession, manifest: Manifest, onnx_path: Path) -> tuple[str, list[str]]:
    """The graph's I/O must be the export contract: z float [batch, z_dim] -> image, flagged, score."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_out = [t["name"] for t in manifest.outputs] or ["image", "flagged", "score"]
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != [manifest.z_dim]:
        got = [(i.name, i.type, i.shape) for i in inputs]
        raise ModelLoadError(f"{onnx_path}: expected one float input [batch, {manifest.z_dim}], the graph has {got}")
    if [o.name for o in outputs] != want_out:
        raise ModelLoadError(f"{onnx_path}: outputs {[o.name for o in outputs]} != manifest's {want_out}")
    return inputs[0].name, want_out


def _fp32_below(manifest: Manifest, onnx_path: Path, override: Optional[int] = None) -> int:
    """The batch below which a bf16 artifact runs its fp32 graph: ``override``, else the manifest's
    ``info.program.fp32_below`` (measured at export)."""
    if override is not None:
        return override
    program = manifest.info.get("program")
    below = program.get("fp32_below", 1) if isinstance(program, dict) else 1
    if isinstance(below, bool) or not isinstance(below, int) or below < 1:
        raise ModelLoadError(f"{onnx_path}: manifest info.program.fp32_below must be a positive integer, got {below!r}")
    return below


def _program(
    art: Artifact,
    manifest: Manifest,
    threads: Optional[int],
    session: ort.InferenceSession,
    below: Optional[int],
    compile_program: bool = True,
) -> Optional[Run]:
    """A bf16 artifact's PyTorch program (``serve.backends``), batches under ``below`` routed to its fp32
    graph; None for the ONNX precisions (``below`` is None). ``compile_program``: compiled at load for the
    batches it will run (when exported for Inductor)."""
    if below is None:
        return None
    if PROGRAM not in art.sidecars or PROGRAM_WEIGHTS not in art.sidecars:
        raise ModelLoadError(
            f"{art.onnx_path}: a bf16 artifact runs {PROGRAM} + {PROGRAM_WEIGHTS}, listed and hashed in its "
            "manifest.json; give the export directory"
        )
    try:
        weights, compile_from = art.sidecars[PROGRAM_WEIGHTS], below if compile_program else None
        program = load_program(art.sidecars[PROGRAM], weights, manifest.z_dim, threads, compile_from)
    except BackendError as exc:
        raise ModelLoadError(str(exc)) from None
    return routed(program, onnx_runner(session, session.get_inputs()[0].name), below)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class SafeGenerator:
    """A guarded generator on ONNX Runtime (a bf16 artifact: its PyTorch program); build it with ``load``."""

    def __init__(
        self,
        session: ort.InferenceSession,
        manifest: Manifest,
        requested: list[str],
        max_batch: int,
        source: Path,
        on_flagged: Optional[str] = None,
        program: Optional[Run] = None,
        fp32_below: Optional[int] = None,
    ) -> None:
        self._session, self.spec, self.max_batch, self.path = session, manifest, max_batch, source
        self.manifest: dict[str, Any] = manifest.to_json()
        self._input, self._outputs = _check_graph(session, manifest, source)
        self._backend: Run = program or onnx_runner(session, self._input)
        self.precision: str = manifest.precision
        # bf16: smaller batches run the fp32 graph (the crossover export measured; serve.backends.routed)
        self.fp32_below = fp32_below if program else None
        self.has_image_check = tuple(self._outputs[3:]) == CHECK_OUTPUTS
        if on_flagged is not None and not self.has_image_check:
            raise ModelLoadError(f"--on-flagged {on_flagged}: {source} has no image check (export with --image-check)")
        try:
            self.on_flagged = check_policy(on_flagged or "resample") if self.has_image_check else None
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        self.z_dim: int = manifest.z_dim
        self.sha256: Optional[str] = (manifest.files or {}).get("model.onnx")
        self.timings: dict[str, float] = {}
        self.requested_providers = requested
        self.providers: list[str] = [TORCH_BF16] if program else session.get_providers()
        self.provider: str = self.providers[0]
        self.fallback: Optional[str] = None
        if program is None and self.provider != requested[0]:
            self.fallback = (
                f"asked for {requested[0]} but ONNX Runtime runs on {self.provider} "
                "(CUDA/TensorRT libraries missing or the device is unusable)"
            )
            warnings.warn(self.fallback, RuntimeWarning, stacklevel=3)
        started = time.perf_counter()
        try:
            self.verified: VerifiedGuard = verify(self._run, manifest, str(source))
        except SelfTestError as exc:
            raise ModelLoadError(str(exc)) from None
        self.timings["self_test_s"] = time.perf_counter() - started

    @classmethod
    def load(
        cls,
        path: Union[str, Path],
        providers: Union[str, Sequence[str]] = "auto",
        max_batch: int = DEFAULT_MAX_BATCH,
        threads: Optional[int] = None,
        pin: Optional[str] = None,
        on_flagged: Optional[str] = None,
        fp32_below: Optional[int] = None,
        compile_program: bool = True,
    ) -> SafeGenerator:
        """Open an export directory (model.onnx + manifest.json) or a model.onnx file.

        The graph's sha256 must be the one manifest.json records (and ``pin``, when given); then the
        known-answer self-test must confirm the guard mode, thresholds and weights the manifest claims.
        ``on_flagged``: what to do with an image the in-graph image check flags (``serve.policy``;
        default resample), for artifacts exported with one. ``fp32_below``: a bf16 artifact runs batches
        smaller than this on its fp32 graph (default: the crossover export measured; 1: always bf16).
        ``compile_program``: compile a bf16 program with Inductor at load (needs a C++ compiler; False runs
        it uncompiled, slower).
        """
        _positive("max_batch", max_batch)
        if fp32_below is not None:
            _positive("fp32_below", fp32_below)
        try:
            art = open_artifact(path, pin)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None
        requested = resolve_providers(providers)
        auto = isinstance(providers, str) and providers == "auto"
        if art.manifest is not None and art.manifest.precision == "bf16" and not auto and requested[0] != CPU:
            raise ModelLoadError(
                f"providers {requested[0]}: a bf16 artifact runs its PyTorch program on the CPU; load it with "
                "providers='cpu' (or 'auto'), or export fp16 for a GPU"
            )
        session = _session(art.model, art.onnx_path, requested, threads)
        try:
            manifest = same_manifest(
                session.get_modelmeta().custom_metadata_map.get("manifest"), art.manifest, art.onnx_path
            )
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None
        below = _fp32_below(manifest, art.onnx_path, fp32_below) if manifest.precision == "bf16" else None
        started = time.perf_counter()
        # a crossover above the largest batch means the program never runs: nothing to compile at load
        compiles = compile_program and below is not None and below <= max_batch
        program = _program(art, manifest, threads, session, below, compiles)
        program_s = time.perf_counter() - started
        gen = cls(session, manifest, requested, max_batch, art.onnx_path, on_flagged, program, below)
        gen.sha256 = art.sha256
        gen.timings["hash_s"] = art.hash_seconds
        if program is not None:
            gen.timings["program_load_s"] = program_s  # rebuilding, and compiling every bucket it will run
        return gen

    def _run(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The latent guard's outputs (image, flagged, score): what the self-test replays."""
        image, flagged, score = self._backend(self._outputs[:3], z)
        return image, flagged, score

    def _run_all(self, z: np.ndarray) -> list[np.ndarray]:
        return self._backend(self._outputs, z)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape

    @property
    def guard(self) -> dict[str, Any]:
        """The guard as the load-time self-test verified it (mode, thresholds ± their precision)."""
        return self.verified.as_dict()

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.manifest.get("name"),
            "z_dim": self.z_dim,
            "image": list(self.image_shape),
            "guard": self.guard.get("mode"),
            "provider": self.provider,
            "precision": self.precision,
            "fallback": self.fallback,
            "max_batch": self.max_batch,
            "fp32_below": self.fp32_below,
        }

    def generate(
        self, n: Optional[int] = None, z: Optional[np.ndarray] = None, seed: Optional[int] = None
    ) -> GenerateResult:
        """Images for ``z`` [N, z_dim] float32, or for ``n`` latents drawn from N(0, I) (``seed`` for repeatability)."""
        latents = self._check_z(z, n, seed) if z is not None else self._sample(1 if n is None else n, seed)
        sources = [None] * len(latents) if z is not None else [RowSource(seed, i) for i in range(len(latents))]
        result = self.generate_rows(latents, sources)
        if result.actions is not None and (result.actions == "rejected").any():
            k = int((result.actions == "rejected").sum())
            raise ImageRejectedError(f"the image check flagged {k} of {len(result)} images (policy: reject)")
        return result

    def generate_rows(self, z: np.ndarray, sources: Sequence[Optional[RowSource]]) -> GenerateResult:
        """Checked latents [N, z_dim] and where each came from (``serve.policy``); rejected rows are reported."""
        outputs = self._run_all(z)
        if not self.has_image_check:
            image, flagged, score = outputs
            return GenerateResult(image, flagged, score, z, self.provider)
        assert self.on_flagged is not None
        z, outputs, actions = enforce(self.on_flagged, self._run_all, z, outputs, sources)
        image, flagged, score, image_flagged, image_score = outputs
        return GenerateResult(image, flagged, score, z, self.provider, image_flagged, image_score, actions)

    def _check_batch(self, n: int, what: str) -> None:
        if not 1 <= n <= self.max_batch:
            raise RuntimeInputError(f"{what} = {n}: must be between 1 and {self.max_batch} (split larger requests)")

    def _sample(self, n: Any, seed: Any) -> np.ndarray:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise RuntimeInputError(f"n must be an integer, got {type(n).__name__}")
        self._check_batch(int(n), "n")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise RuntimeInputError(f"seed must be a non-negative integer, got {seed!r}")
        return np.random.default_rng(seed).standard_normal((int(n), self.z_dim), dtype=np.float32)

    def _check_z(self, z: Any, n: Optional[int], seed: Optional[int]) -> np.ndarray:
        if n is not None or seed is not None:
            raise RuntimeInputError("give z, or n (and seed) — not both")
        if not isinstance(z, np.ndarray):
            raise RuntimeInputError(f"z must be a numpy array of float32, got {type(z).__name__}")
        if z.dtype != np.float32:
            raise RuntimeInputError(f"z must be float32, got {z.dtype} (use z.astype(np.float32))")
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise RuntimeInputError(f"z must have shape [batch, {self.z_dim}], got {list(z.shape)}")
        self._check_batch(z.shape[0], "batch")
        bad = ~np.isfinite(z).all(axis=1)
        if bad.any():
            raise RuntimeInputError(
                f"z holds NaN or infinity in {int(bad.sum())} of {len(z)} rows (first: row {int(np.argmax(bad))})"
            )
        big = (np.abs(z) > LATENT_BOUND).any(axis=1)
        if big.any():
            raise RuntimeInputError(
                f"z has values beyond ±{LATENT_BOUND:g} in {int(big.sum())} of {len(z)} rows "
                f"(first: row {int(np.argmax(big))})"
            )
        return np.ascontiguousarray(z)
