"""Atomic file writes and the safetensors + JSON checkpoint format (never pickles, never code)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from feature_unlearn.unlearn.artifacts import FORMAT_VERSION, Record, RunRecord, parse_record
from feature_unlearn.unlearn.errors import CheckpointError

RECORD_KEY = "feature_unlearn_record"  # the safetensors header key that holds the sealed record
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or exception leaves the old file (or nothing) behind, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    def write(p: Path) -> None:
        p.write_text(text)

    return atomic_write(path, write)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object")
    return obj


@dataclass(frozen=True)
class Checkpoint:
    """What ``load_checkpoint`` returns: the tensors, the typed record sealed with them, their sha256."""

    tensors: dict[str, torch.Tensor]
    record: Record
    sha256: str
    stem: Path


def save_checkpoint(stem: str | Path, state: dict[str, torch.Tensor], record: Record) -> Path:
    """Write ``stem.safetensors`` (tensors + the record in its header) and ``stem.json``, atomically.

    The record travels inside the safetensors header, so the file's sha256 covers it; the JSON
    sidecar is the readable copy plus that sha256.
    """
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    body = record.as_json()
    header = {"format_version": str(FORMAT_VERSION), RECORD_KEY: json.dumps(body, sort_keys=True)}
    atomic_write(weights, lambda p: save_file(tensors, str(p), metadata=header))
    sidecar = {"format_version": FORMAT_VERSION, **body, "sha256": sha256_file(weights)}
    write_json(stem.with_suffix(".json"), sidecar)
    return weights


def _sealed(weights: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the record JSON sealed in the safetensors header."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    if header.get("format_version") != str(FORMAT_VERSION) or RECORD_KEY not in header:
        raise CheckpointError(
            f"{weights}: no sealed format {FORMAT_VERSION} record in its header (written by an older version?)"
        )
    try:
        body = json.loads(header[RECORD_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{weights}: the record in its header is not valid JSON ({exc})") from None
    return tensors, body


def _canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


def load_checkpoint(stem: str | Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``: sha256, sealed record, and the sidecar's agreement."""
    stem = Path(stem)
    weights, sidecar_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights}")
    meta = read_json(sidecar_path, "checkpoint sidecar")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{sidecar_path}: format_version {meta.get('format_version')!r} "
            f"is not one this version reads ({FORMAT_VERSION})"
        )
    actual = sha256_file(weights)
    if meta.get("sha256") != actual:
        raise CheckpointError(
            f"{weights} does not match its sidecar {sidecar_path.name} "
            f"(sha256 {actual[:12]}… != {str(meta.get('sha256'))[:12]}…)"
        )
    tensors, body = _sealed(weights)
    copy = {k: v for k, v in meta.items() if k not in ("format_version", "sha256")}
    if _canonical(copy) != _canonical(body):  # canonical text: NaN in a metric still equals itself
        changed = sorted(k for k in set(copy) | set(body) if _canonical(copy.get(k)) != _canonical(body.get(k)))
        raise CheckpointError(
            f"{sidecar_path}: field(s) {changed} differ from the record sealed in {weights.name} (edited by hand?)"
        )
    return Checkpoint(tensors, parse_record(body, str(sidecar_path)), actual, stem)


def read_run(directory: str | Path) -> RunRecord:
    """``run.json`` of a finished fit, checked against its schema (an unknown format_version is refused)."""
    path = Path(directory) / "run.json"
    return RunRecord.from_dict(read_json(path, "fit run report"), str(path))
