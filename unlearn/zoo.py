"""The shipped model zoo and the loaders for generators and classifiers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from feature_unlearn.unlearn import byo
from feature_unlearn.unlearn.artifacts import FORMAT_VERSION, ModelRecord
from feature_unlearn.unlearn.errors import CheckpointError
from feature_unlearn.unlearn.io import load_checkpoint, read_json
from feature_unlearn.unlearn.models import AttributeClassifier, build_classifier, build_generator
from feature_unlearn.unlearn.pretrain.recipes import names

WEIGHTS = Path(__file__).parent / "zoo" / "weights"
GENERATORS = names("generator")
CLASSIFIERS = names("classifier")


def zoo_names() -> list[str]:
    """The registry's entries that this install ships, classifiers first."""
    return [n for n in names() if (WEIGHTS / f"{n}.json").is_file()]


def resolve(name_or_path: str | Path) -> Path:
    """Checkpoint stem for a zoo name, a run directory, or a .safetensors/.json path."""
    s = str(name_or_path)
    if s in GENERATORS + CLASSIFIERS:
        stem = WEIGHTS / s
        if not stem.with_suffix(".json").is_file():
            raise CheckpointError(f"zoo entry {s!r} is not shipped in this install ({WEIGHTS})")
        return stem
    p = Path(s)
    if p.is_dir():
        for stem in (p / "generator", p / "model"):
            if stem.with_suffix(".json").is_file():
                return stem
        raise CheckpointError(f"{p}: directory holds no generator.json or model.json checkpoint")
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix("")
    if not p.exists() and "/" not in s and "." not in s:
        raise CheckpointError(f"unknown zoo name {s!r}; choose from: {', '.join(GENERATORS + CLASSIFIERS)}")
    raise CheckpointError(f"{s}: not a zoo name, run directory or checkpoint file")


@dataclass(frozen=True)
class ModelMeta:
    """A loaded model's sealed record, the sha256 of its weights and where it came from."""

    record: ModelRecord
    sha256: str
    stem: Path


def _load(name_or_path: str | Path, kind: str, trust_code: bool = False) -> tuple[nn.Module, ModelMeta]:
    stem = resolve(name_or_path)
    ckpt = load_checkpoint(stem)
    record = ckpt.record
    if not isinstance(record, ModelRecord) or record.kind != kind:
        raise CheckpointError(f"{stem}.json: holds a {getattr(record, 'kind', '?')!r}, not a {kind}")
    where = f"{stem}.json"
    if kind == "generator":
        model = build_generator(record.arch, where, trust_code)
    else:
        model = build_classifier(record.arch, where)
    try:
        model.load_state_dict(ckpt.tensors)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise CheckpointError(f"{stem}.safetensors does not fit its architecture: {first}") from None
    return model.eval(), ModelMeta(record, ckpt.sha256, stem)


def load_generator(name_or_path: str | Path, trust_code: bool = False) -> nn.Module:
    """An eval-mode generator from a zoo name, checkpoint path or fit run directory.

    ``trust_code``: allow a checkpoint whose architecture is a ``module:factory`` to import it.
    """
    return load_generator_with_meta(name_or_path, trust_code)[0]


def load_generator_with_meta(
    name_or_path: str | Path, trust_code: bool = False, weights: Path | None = None
) -> tuple[nn.Module, ModelMeta]:
    """A zoo name, checkpoint or run directory; or a user's ``package.module:factory`` (``weights``: safetensors)."""
    if byo.is_spec(name_or_path):
        g, record = byo.foreign_generator(str(name_or_path), trust_code, weights)
        return g, ModelMeta(record, byo.state_sha256(g), Path(str(name_or_path)))
    if weights is not None:
        raise CheckpointError(f"--weights {weights}: only with --model package.module:factory")
    return _load(name_or_path, "generator", trust_code)


def load_classifier(name_or_path: str | Path) -> AttributeClassifier:
    model, _ = _load(name_or_path, "classifier")
    assert isinstance(model, AttributeClassifier)
    return model


def zoo_table() -> list[dict[str, Any]]:
    """One row per shipped entry: name, kind, dataset, architecture kind and measured metrics."""
    rows = []
    for name in zoo_names():
        path = WEIGHTS / f"{name}.json"
        meta = read_json(path, "zoo sidecar")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
        body = {k: v for k, v in meta.items() if k not in ("format_version", "sha256")}
        record = ModelRecord.from_dict(body, str(path))
        rows.append(
            {
                "name": name,
                "kind": record.kind,
                "dataset": record.dataset,
                "arch": record.arch.get("kind"),
                "exclude": record.exclude,
                "size_kb": round((WEIGHTS / f"{name}.safetensors").stat().st_size / 1024),
                "metrics": record.metrics,
            }
        )
    return rows
