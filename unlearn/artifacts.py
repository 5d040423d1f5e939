"""The on-disk contracts of ``unlearn``: one frozen, versioned schema per artifact, data only.

Artifacts travel between people and machines, so nothing read from them may name code to run:

- ``ModelRecord``: a generator or classifier (zoo entries, ``pretrain`` outputs, a fit run's
  ``generator``). A fit run adds its base model, features, α and the ``GuardRecord``.
- ``FitCheckpointRecord``: the resumable state of a fit (step, round, guard rows, history) and
  the options it was started with.
- ``LatentsRecord``: latents saved by ``collect --sheet`` for a person to label.
- ``RunRecord``: ``run.json``, the report of a finished fit (not a checkpoint: nothing loads
  weights from it, but readers still refuse a version they do not know).

The export manifest read by the torch-free runtime has its own schema in ``serve/manifest.py``
(``serve`` imports nothing from here).

Checkpoint records live *inside* the ``.safetensors`` header (``unlearn.io``), so the weights'
sha256 covers the guard, the resumable state and the options too; the JSON sidecar is a
readable copy that must agree with it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, TypeVar, Union

from feature_unlearn.unlearn.errors import CheckpointError

FORMAT_VERSION = 2
GENERATOR_KINDS = ("vae", "dcgan")  # built from data; "factory" names code and needs trust_code
CLASSIFIER_KINDS = ("cnn", "resnet")
IMAGE_CHECK_KINDS = ("image-check",)
CODE_KINDS = ("factory", "plugin")  # "plugin": the pre-v2 spelling, refused the same way

# record kind -> the architecture kinds built from data (``unlearn.imagecheck``: the distilled image check)
MODEL_KINDS = {"generator": GENERATOR_KINDS, "classifier": CLASSIFIER_KINDS, "image-check": IMAGE_CHECK_KINDS}

R = TypeVar("R", bound="Record")


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed JSON) checked against a field's type; tuples come back as tuples."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_value(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise CheckpointError(f"{where}: expected a list, got {type(value).__name__}")
        item = typing.get_args(hint)[0]
        return tuple(_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise CheckpointError(f"{where}: expected a list, got {type(value).__name__}")
        return value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"{where}: expected a finite number, got {value!r}"[:200])
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CheckpointError(f"{where}: expected an integer, got {value!r}"[:200])
    if hint in (str, bool) and not isinstance(value, hint):
        raise CheckpointError(f"{where}: expected a {hint.__name__}, got {value!r}"[:200])
    return value


class Record:
    """A frozen dataclass built from JSON: unknown fields, missing fields and wrong types are refused."""

    KIND: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[R], d: Any, where: str) -> R:
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise CheckpointError(f"{where}: unknown field(s) {unknown} for a {cls.KIND or cls.__name__} record")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, f in fields.items():
            if name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise CheckpointError(f"{where}: missing field {name!r}")
                continue
            values[name] = _check_value(d[name], hints[name], f"{where}: {name}")
        record = cls(**values)
        record.validate(where)
        return record

    def validate(self, where: str) -> None:
        """Checks across fields (subclasses add theirs)."""

    def as_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


@dataclass(frozen=True)
class GuardRecord(Record):
    """The target vectors of a fit: K unit rows û_k [K][z_dim], thresholds t_k, the feature of each row.

    ``shift``: the rows v_k the guard moves latents along (û_k·v_k = 1), orthogonal to the
    directions of the ``keep`` attributes; absent, the shift runs along û_k (the paper's).
    """

    KIND = "guard"
    direction: tuple[tuple[float, ...], ...]
    threshold: tuple[float, ...]
    features: tuple[str, ...]
    shift: Optional[tuple[tuple[float, ...], ...]] = None
    keep: tuple[str, ...] = ()
    margin: float = 0.0  # a flagged latent lands this far below its threshold (fit --margin)

    @property
    def z_dim(self) -> int:
        return len(self.direction[0])

    def validate(self, where: str) -> None:
        if not self.direction or len(self.threshold) != len(self.direction):
            raise CheckpointError(
                f"{where}: guard has {len(self.direction)} directions and {len(self.threshold)} thresholds"
            )
        for i, row in enumerate(self.direction):
            if len(row) != self.z_dim:
                raise CheckpointError(f"{where}: guard.direction[{i}] has {len(row)} values, row 0 has {self.z_dim}")
            if math.sqrt(sum(v * v for v in row)) == 0.0:
                raise CheckpointError(f"{where}: guard.direction[{i}] is the zero vector")
        if len(self.features) != len(self.direction):
            raise CheckpointError(
                f"{where}: guard.features must name the feature of each of the {len(self.direction)} rows"
            )
        if self.shift is not None:
            self._validate_shift(where)
        if self.margin < 0:
            raise CheckpointError(f"{where}: guard.margin must be ≥ 0, got {self.margin}")

    def _validate_shift(self, where: str) -> None:
        assert self.shift is not None
        if len(self.shift) != len(self.direction):
            raise CheckpointError(
                f"{where}: guard.shift has {len(self.shift)} rows, guard.direction {len(self.direction)}"
            )
        for i, (v, u) in enumerate(zip(self.shift, self.direction, strict=True)):
            norm_u = math.sqrt(sum(a * a for a in u))
            dot = sum(a * b for a, b in zip(v, u, strict=False)) / norm_u
            if len(v) != self.z_dim or not abs(dot - 1.0) < 1e-3:
                raise CheckpointError(f"{where}: guard.shift[{i}] must have {self.z_dim} values and û·v = 1")


@dataclass(frozen=True)
class ModelRecord(Record):
    """A generator or classifier: architecture (data only) and provenance; a fit run adds its guard."""

    kind: str
    arch: dict[str, Any]
    dataset: Optional[str] = None
    exclude: Optional[str] = None
    role: Optional[str] = None
    train_args: Optional[dict[str, Any]] = None
    train_images: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    base_model: Optional[str] = None  # fit runs: the zoo name or path of f
    base_sha256: Optional[str] = None
    features: tuple[str, ...] = ()
    alpha: Optional[float] = None
    guard: Optional[GuardRecord] = None

    def validate(self, where: str) -> None:
        if self.kind not in MODEL_KINDS:
            raise CheckpointError(f"{where}: kind {self.kind!r} is not one of {', '.join(MODEL_KINDS)}")
        arch_kind = self.arch.get("kind")
        allowed = MODEL_KINDS[self.kind]
        if arch_kind in CODE_KINDS and self.kind == "generator":
            if not isinstance(self.arch.get("factory"), str):
                raise CheckpointError(f"{where}: arch.factory must be a 'package.module:function' string")
            return
        if arch_kind not in allowed:
            raise CheckpointError(
                f"{where}: unknown {self.kind} architecture kind {arch_kind!r} (expected {', '.join(allowed)})"
            )

    @property
    def factory(self) -> Optional[str]:
        """The ``module:factory`` this generator is built by, when its architecture is code, not data."""
        return str(self.arch["factory"]) if self.arch.get("kind") in CODE_KINDS else None

    @property
    def is_fit_run(self) -> bool:
        return self.guard is not None and self.base_model is not None


@dataclass(frozen=True)
class FitCheckpointRecord(Record):
    """The resumable part of a fit: ``FitState`` as data, the optimiser's groups, the run's options."""

    KIND = "fit-checkpoint"
    kind: str
    state: dict[str, Any]
    param_groups: list[Any]
    options: dict[str, Any]


@dataclass(frozen=True)
class LatentsRecord(Record):
    KIND = "latents"
    kind: str
    model: str
    seed: int


@dataclass(frozen=True)
class RunRecord(Record):
    """``run.json``: the options, detectors, probes and metrics of a finished fit."""

    KIND = "run"
    format_version: int
    options: dict[str, Any]
    metrics: dict[str, Any]
    detectors: list[Any]
    collections: list[Any]
    probes: list[Any]
    guard: GuardRecord
    base_model: str
    base_sha256: Optional[str]
    alpha: float
    version: str

    def validate(self, where: str) -> None:
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: format_version {self.format_version!r} is not one this version reads ({FORMAT_VERSION})"
            )


CHECKPOINT_RECORDS: dict[str, type[Record]] = {
    "generator": ModelRecord,
    "classifier": ModelRecord,
    "image-check": ModelRecord,
    "fit-checkpoint": FitCheckpointRecord,
    "latents": LatentsRecord,
}


def parse_record(d: Any, where: str) -> Record:
    """The typed record of a checkpoint, chosen by its ``kind``."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: expected an object")
    cls = CHECKPOINT_RECORDS.get(str(d.get("kind")))
    if cls is None:
        raise CheckpointError(
            f"{where}: unknown checkpoint kind {d.get('kind')!r} (expected {', '.join(CHECKPOINT_RECORDS)})"
        )
    return cls.from_dict(d, where)
