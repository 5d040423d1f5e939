"""Atomic file writes and the safetensors + JSON checkpoint format (never pickles)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unlearn.errors import CheckpointError

FORMAT_VERSION = 1
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


def save_checkpoint(stem: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` (meta + the weights' sha256), atomically."""
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write(weights, lambda p: save_file(tensors, str(p)))
    sidecar = {"format_version": FORMAT_VERSION, **meta, "sha256": sha256_file(weights)}
    write_json(stem.with_suffix(".json"), sidecar)
    return weights


def load_checkpoint(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``; verify the sidecar's sha256."""
    stem = Path(stem)
    weights, sidecar_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights}")
    meta = read_json(sidecar_path, "checkpoint sidecar")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{sidecar_path}: unsupported format_version {meta.get('format_version')!r}")
    actual = sha256_file(weights)
    if meta.get("sha256") != actual:
        raise CheckpointError(
            f"{weights} does not match its sidecar {sidecar_path.name} (sha256 {actual[:12]}… != {str(meta.get('sha256'))[:12]}…)"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    return state, meta
