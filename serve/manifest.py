"""The export manifest: the one contract between ``export`` (writer) and the torch-free runtime (reader).

``manifest.json`` sits beside ``model.onnx``; the same manifest without ``files`` is embedded in
the graph's ``metadata_props`` (a file cannot hold its own hash). ``files`` holds the sha256 of
``model.onnx`` (and ``model.plan``), which the runtime checks at load. ``self_test`` holds
known answers computed by PyTorch at export: the runtime replays them to verify that the graph
behaves as the manifest says (guard mode, thresholds, weights), so a guard switched off by
editing the graph, or a manifest rewritten to claim another mode, is refused.

Plain Python and numpy only: ``export`` imports this module, ``serve`` imports nothing from
``unlearn`` or ``export``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

MANIFEST_FORMAT = 2
GUARD_MODES = ("shift", "flag", "off")
FILES = ("model.onnx", "model.plan", "model.bf16.onnx", "model.bf16.json", "model.bf16.safetensors")
# A TensorRT engine and the bf16 graph it may be built from: hashed, never loaded by the runtime.
ENGINE_FILES = ("model.plan", "model.bf16.onnx")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class ManifestError(ValueError):
    """The manifest is not one this version reads; the message names the field."""


def _floats(x: Any, where: str) -> tuple[float, ...]:
    if not isinstance(x, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        raise ManifestError(f"{where}: expected a list of numbers")
    if not all(math.isfinite(v) for v in x):
        raise ManifestError(f"{where}: holds NaN or infinity")
    return tuple(float(v) for v in x)


def _rows(x: Any, where: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(x, list) or not x:
        raise ManifestError(f"{where}: expected a non-empty list of rows")
    return tuple(_floats(r, f"{where}[{i}]") for i, r in enumerate(x))


def _bools(x: Any, where: str) -> tuple[bool, ...]:
    if not isinstance(x, list) or not all(isinstance(v, bool) for v in x):
        raise ManifestError(f"{where}: expected a list of booleans")
    return tuple(x)


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, (int, float)):
        raise ManifestError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class GuardSpec:
    mode: str
    direction: Optional[tuple[tuple[float, ...], ...]]  # unit rows û_k [K][z_dim], as the graph holds them
    threshold: Optional[tuple[float, ...]]  # t_k [K]
    # shift rows v_k (û_k·v_k = 1) orthogonal to the kept attributes' directions; None: along û_k
    shift: Optional[tuple[tuple[float, ...], ...]] = None
    keep: tuple[str, ...] = ()  # attributes the shift leaves alone (fit --keep)
    margin: float = 0.0  # shift mode: a flagged latent lands this far below its threshold (fit --margin)

    @classmethod
    def parse(cls, d: Any, z_dim: int, where: str) -> GuardSpec:
        if not isinstance(d, dict) or d.get("mode") not in GUARD_MODES:
            raise ManifestError(f"{where}: guard.mode must be one of {', '.join(GUARD_MODES)}")
        if d.get("direction") is None:
            if d["mode"] != "off":
                raise ManifestError(f"{where}: guard mode {d['mode']!r} without a direction")
            return cls("off", None, None)
        u = _rows(d["direction"], f"{where}: guard.direction")
        t = _floats(d.get("threshold"), f"{where}: guard.threshold")
        if any(len(r) != z_dim for r in u) or len(t) != len(u):
            raise ManifestError(f"{where}: guard has {len(u)} rows of z_dim {z_dim} and {len(t)} thresholds")
        v = None if d.get("shift") is None else _rows(d["shift"], f"{where}: guard.shift")
        if v is not None and (len(v) != len(u) or any(len(r) != z_dim for r in v)):
            raise ManifestError(f"{where}: guard.shift must have {len(u)} rows of z_dim {z_dim}")
        keep = d.get("keep", [])
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise ManifestError(f"{where}: guard.keep must be a list of attribute names")
        margin = d.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ManifestError(f"{where}: guard.margin must be a number ≥ 0")
        return cls(d["mode"], u, t, v, tuple(keep), float(margin))


@dataclass(frozen=True)
class SelfTest:
    """Known answers: latents, and per guard mode the flags and image thumbnails PyTorch produced."""

    latents: tuple[tuple[float, ...], ...]  # [P][z_dim], float32 values
    cases: tuple[str, ...]  # what each probe is: "random", "below-k", "above-k", "far-k"
    score: tuple[float, ...]  # p(z) per probe (the same in every mode)
    flagged: dict[str, tuple[bool, ...]]  # mode -> [P]
    thumbs: dict[str, tuple[tuple[float, ...], ...]]  # mode -> [P][grid*grid*C] block means (grey levels)
    grid: int  # thumbnails are grid x grid block means of the uint8 image
    thumb_tolerance: float  # grey levels, per block mean (fits the precision and the providers)
    delta: float  # below/above probes sit at t_k -/+ delta * max(1, |t_k|)

    @classmethod
    def parse(cls, d: Any, z_dim: int, where: str) -> SelfTest:
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: self_test must be an object")
        w = f"{where}: self_test"
        latents = _rows(_get(d, "latents", list, w), f"{w}.latents")
        n = len(latents)
        cases = _get(d, "cases", list, w)
        score = _floats(_get(d, "score", list, w), f"{w}.score")
        flagged = {m: _bools(v, f"{w}.flagged.{m}") for m, v in _get(d, "flagged", dict, w).items()}
        thumbs = {m: _rows(v, f"{w}.thumbs.{m}") for m, v in _get(d, "thumbs", dict, w).items()}
        sizes = {len(latents[0]) == z_dim, len(cases) == n, len(score) == n}
        sizes |= {len(v) == n for v in (*flagged.values(), *thumbs.values())}
        if sizes != {True} or set(flagged) != set(thumbs) or not set(flagged) <= set(GUARD_MODES):
            raise ManifestError(f"{w}: probes, cases, scores, flags and thumbnails do not line up")
        grid, tol, delta = (
            _get(d, "grid", int, w),
            _get(d, "thumb_tolerance", (int, float), w),
            _get(d, "delta", (int, float), w),
        )
        return cls(latents, tuple(map(str, cases)), score, flagged, thumbs, grid, float(tol), float(delta))

    def z(self) -> np.ndarray:
        return np.asarray(self.latents, dtype=np.float32)


@dataclass(frozen=True)
class Manifest:
    """What an exported artifact is. ``files`` is present in manifest.json, absent in the embedded copy."""

    format_version: int
    name: str
    z_dim: int
    image: dict[str, Any]  # height, width, channels, dtype, layout, formula
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    guard: GuardSpec
    features: tuple[str, ...]
    precision: str
    self_test: SelfTest
    info: dict[str, Any] = field(default_factory=dict)  # provenance and validation figures (data only)
    files: Optional[dict[str, str]] = None  # file name -> sha256

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return int(self.image["height"]), int(self.image["width"]), int(self.image["channels"])

    def embedded(self) -> Manifest:
        """The copy stamped into the graph (without the file hashes)."""
        return dataclasses.replace(self, files=None)

    def to_json(self) -> dict[str, Any]:
        d = {
            "format_version": self.format_version,
            "name": self.name,
            "z_dim": self.z_dim,
            "image": self.image,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "features": list(self.features),
            "precision": self.precision,
            "guard": {
                "mode": self.guard.mode,
                "direction": _lists(self.guard.direction),
                "threshold": _lists(self.guard.threshold),
                **({"shift": _lists(self.guard.shift)} if self.guard.shift is not None else {}),
                **({"keep": list(self.guard.keep)} if self.guard.keep else {}),
                **({"margin": self.guard.margin} if self.guard.margin else {}),
            },
            "self_test": _lists(dataclasses.asdict(self.self_test)),
            "info": self.info,
        }
        if self.files is not None:
            d["files"] = self.files
        return d

    @classmethod
    def from_json(cls, d: Any, where: str) -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: the manifest must be a JSON object")
        if d.get("format_version") != MANIFEST_FORMAT:
            raise ManifestError(
                f"{where}: manifest format_version {d.get('format_version')!r} is not one this runtime reads "
                f"({MANIFEST_FORMAT}); re-export the model with this version's unlearn-cli export"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ManifestError(f"{where}: unknown manifest field(s) {unknown}")
        z_dim = _get(d, "z_dim", int, where)
        return cls(
            format_version=MANIFEST_FORMAT,
            name=str(_get(d, "name", str, where)),
            z_dim=z_dim,
            image=_get(d, "image", dict, where),
            inputs=_get(d, "inputs", list, where),
            outputs=_get(d, "outputs", list, where),
            guard=GuardSpec.parse(d.get("guard"), z_dim, where),
            features=tuple(map(str, _get(d, "features", list, where))),
            precision=_precision(d, where),
            self_test=SelfTest.parse(d.get("self_test"), z_dim, where),
            info=d.get("info") or {},
            files=_files(d.get("files"), where),
        )


def _precision(d: dict[str, Any], where: str) -> str:
    precision = str(_get(d, "precision", str, where))
    if precision not in PRECISIONS:
        raise ManifestError(f"{where}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def _files(x: Any, where: str) -> Optional[dict[str, str]]:
    if x is None:
        return None
    if not isinstance(x, dict) or not all(k in FILES and isinstance(v, str) and len(v) == 64 for k, v in x.items()):
        raise ManifestError(f"{where}: files must map {', '.join(FILES)} to sha256 hex digests")
    return dict(x)


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def thumbnail(images: np.ndarray, grid: int) -> np.ndarray:
    """Block means of uint8 images [N, H, W, C] on a grid x grid layout: [N, grid*grid*C] float64.

    Averaging blocks keeps the check stable across providers (a pixel may round the other way)
    while any change to the weights or the guard that is visible in the image moves a block.
    """
    n, h, w, c = images.shape
    rows = np.array_split(np.arange(h), grid)
    cols = np.array_split(np.arange(w), grid)
    x = images.astype(np.float64)
    blocks = [x[:, r][:, :, k].mean(axis=(1, 2)) for r in rows for k in cols]  # each [N, C]
    return np.stack(blocks, axis=1).reshape(n, grid * grid * c)
