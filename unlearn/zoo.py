"""The shipped model zoo and the loaders for generators and classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from unlearn.errors import CheckpointError
from unlearn.io import load_checkpoint, read_json
from unlearn.models import AttributeClassifier, build_classifier, build_generator

WEIGHTS = Path(__file__).parent / "zoo" / "weights"
GENERATORS = (
    "mnist-vae", "mnist-dcgan", "faces-vae", "faces-dcgan",
    "mnist-vae-no-thick", "mnist-dcgan-no-thick", "faces-vae-no-eyeglasses", "faces-dcgan-no-eyeglasses",
)  # fmt: skip
CLASSIFIERS = ("mnist-labeller", "mnist-auditor", "faces-labeller", "faces-auditor")
DEFAULT_FEATURE = {"mnist": "thick", "faces": "eyeglasses"}


def zoo_names() -> list[str]:
    return [n for n in GENERATORS + CLASSIFIERS if (WEIGHTS / f"{n}.json").is_file()]


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


def _load(name_or_path: str | Path, kind: str) -> tuple[nn.Module, dict[str, Any]]:
    stem = resolve(name_or_path)
    state, meta = load_checkpoint(stem)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{stem}.json: holds a {meta.get('kind')!r}, not a {kind}")
    arch = meta.get("arch")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{stem}.json: missing 'arch'")
    model = build_generator(arch, f"{stem}.json") if kind == "generator" else build_classifier(arch, f"{stem}.json")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise CheckpointError(f"{stem}.safetensors does not fit its architecture: {first}") from None
    return model.eval(), meta


def load_generator(name_or_path: str | Path) -> nn.Module:
    """An eval-mode generator from a zoo name, checkpoint path or fit run directory."""
    return load_generator_with_meta(name_or_path)[0]


def load_generator_with_meta(name_or_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    return _load(name_or_path, "generator")


def load_classifier(name_or_path: str | Path) -> AttributeClassifier:
    model, _ = _load(name_or_path, "classifier")
    assert isinstance(model, AttributeClassifier)
    return model


def zoo_table() -> list[dict[str, Any]]:
    """One row per shipped entry: name, kind, dataset, architecture kind and measured metrics."""
    rows = []
    for name in zoo_names():
        meta = read_json(WEIGHTS / f"{name}.json", "zoo sidecar")
        rows.append({
            "name": name, "kind": meta.get("kind"), "dataset": meta.get("dataset"),
            "arch": meta.get("arch", {}).get("kind"), "exclude": meta.get("exclude"),
            "size_kb": round((WEIGHTS / f"{name}.safetensors").stat().st_size / 1024),
            "metrics": meta.get("metrics", {}),
        })  # fmt: skip
    return rows
