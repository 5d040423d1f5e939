"""Opening an exported artifact: its bytes, their sha256, and the manifest that authenticates them.

The graph is read once, hashed, and handed to ONNX Runtime as those same bytes, so the file cannot
change between the check and the load. ``manifest.json`` records the sha256 of ``model.onnx``
(and ``model.plan``); a pinned digest (``serve --pin``) must match too. A bare ``model.onnx``
without its manifest.json loads only with a pin: nothing else would authenticate it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from feature_unlearn.serve.manifest import ENGINE_FILES, Manifest, ManifestError

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(RuntimeError):
    """The artifact is missing, altered, or not the pinned one; the message names the file."""


@dataclass(frozen=True)
class Artifact:
    onnx_path: Path
    model: bytes  # the exact bytes that were hashed and are loaded
    sha256: str  # of model.onnx
    manifest: Optional[Manifest]  # manifest.json (None for a pinned bare model.onnx)
    hash_seconds: float
    sidecars: dict[str, bytes] = field(default_factory=dict)  # other files the manifest lists, read and verified once


def check_pin(pin: Optional[str]) -> Optional[str]:
    if pin is None:
        return None
    pin = pin.strip().lower()
    if not SHA256.match(pin):
        raise ArtifactError(f"--pin {pin[:80]!r}: expected the 64 hex digits of model.onnx's sha256")
    return pin


def _read_manifest(path: Path) -> Manifest:
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None
    try:
        return Manifest.from_json(d, str(path))
    except ManifestError as exc:
        raise ArtifactError(str(exc)) from None


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_files(manifest: Manifest, onnx_path: Path, digest: str, where: Path) -> None:
    files = manifest.files or {}
    if files.get("model.onnx") != digest:
        raise ArtifactError(
            f"{onnx_path}: sha256 {digest[:12]}… is not the {str(files.get('model.onnx'))[:12]}… recorded in "
            f"{where.name}: the graph was changed after export"
        )
    for name in ENGINE_FILES:  # optional here (the runtime does not load them), never changed
        path = onnx_path.with_name(name)
        if name in files and path.is_file() and _hash_file(path) != files[name]:
            raise ArtifactError(f"{path}: sha256 differs from {where.name}: the file was changed after export")


def _read_sidecars(manifest: Manifest, onnx_path: Path, where: Path) -> dict[str, bytes]:
    """The bf16 program files the manifest lists: read once, hashed, and those bytes are what gets loaded."""
    out = {}
    for name, digest in (manifest.files or {}).items():
        if name == "model.onnx" or name in ENGINE_FILES:
            continue
        path = onnx_path.with_name(name)
        if not path.is_file():
            raise ArtifactError(f"{path}: not found, but {where.name} lists it")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"{path}: sha256 differs from {where.name}: the file was changed after export")
        out[name] = data
    return out


def open_artifact(path: Union[str, Path], pin: Optional[str] = None) -> Artifact:
    """Read, hash and authenticate ``path`` (an export directory or its model.onnx)."""
    p = Path(path)
    onnx_path = p / "model.onnx" if p.is_dir() else p
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: not found (give an export directory or a model.onnx file)")
    sidecar = onnx_path.with_name("manifest.json")
    pin = check_pin(pin)
    if not sidecar.is_file() and pin is None:
        raise ArtifactError(
            f"{sidecar}: not found; it holds the sha256 that authenticates {onnx_path.name} (or pass a pin)"
        )
    started = time.perf_counter()
    model = onnx_path.read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    hash_seconds = time.perf_counter() - started
    if pin is not None and digest != pin:
        raise ArtifactError(f"{onnx_path}: sha256 {digest[:12]}… is not the pinned {pin[:12]}…; refusing it")
    manifest = _read_manifest(sidecar) if sidecar.is_file() else None
    sidecars: dict[str, bytes] = {}
    if manifest is not None:
        _check_files(manifest, onnx_path, digest, sidecar)
        sidecars = _read_sidecars(manifest, onnx_path, sidecar)
    return Artifact(onnx_path, model, digest, manifest, hash_seconds, sidecars)


def same_manifest(embedded: Any, outer: Optional[Manifest], where: Path) -> Manifest:
    """The manifest in the graph's metadata, which manifest.json (less its file hashes) must equal."""
    try:
        inner = Manifest.from_json(json.loads(embedded), f"{where} (embedded manifest)") if embedded else None
    except (json.JSONDecodeError, ManifestError) as exc:
        raise ArtifactError(f"{where}: unreadable embedded manifest ({exc})") from None
    if inner is None:
        raise ArtifactError(f"{where}: no embedded manifest; export it with unlearn-cli export")
    if outer is not None and outer.embedded().to_json() != inner.to_json():
        raise ArtifactError(f"{where.with_name('manifest.json')}: does not match the manifest embedded in {where.name}")
    return outer or inner
