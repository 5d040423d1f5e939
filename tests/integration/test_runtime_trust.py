"""An edited artifact is refused: patched guard constants, flipped weights, a manifest claiming another mode."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from feature_unlearn.serve import ModelLoadError, SafeGenerator

THRESHOLD = 0.4  # the shared ``artifact`` fixture's guard threshold (tests/conftest.py)


def _copy(artifact: Path, dest: Path) -> Path:
    shutil.copytree(artifact, dest)
    return dest


def _rehash(art: Path) -> None:
    """What a careful forger does: make manifest.json's file hash agree with the edited graph."""
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()
    (art / "manifest.json").write_text(json.dumps(manifest))


def _patch_initializers(art: Path, edit: str) -> int:
    """Edit model.onnx in place: 'threshold' sets the guard's t to 1e30, 'weights' flips bytes of a conv kernel."""
    model = onnx.load(str(art / "model.onnx"))
    changed = 0
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init).copy()
        if edit == "threshold" and a.dtype == np.float32 and a.size == 1 and np.isclose(a.reshape(-1)[0], THRESHOLD):
            a[...] = 1e30
        elif edit == "weights" and a.ndim == 4 and changed == 0:
            raw = bytearray(a.tobytes())
            raw[100:104] = bytes(b ^ 0x40 for b in raw[100:104])  # one float's exponent bits
            a = np.frombuffer(bytes(raw), dtype=a.dtype).reshape(a.shape).copy()
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(a, init.name))
        changed += 1
    onnx.save(model, str(art / "model.onnx"))
    return changed


def test_the_untouched_artifact_loads_and_reports_what_it_verified(artifact: Path) -> None:
    gen = SafeGenerator.load(artifact)
    assert gen.guard["verified"] and gen.guard["mode"] == "shift"
    assert gen.guard["threshold"] == pytest.approx((THRESHOLD,)) and gen.guard["threshold_precision"][0] <= 1e-3
    assert gen.sha256 == json.loads((artifact / "manifest.json").read_text())["files"]["model.onnx"]


@pytest.mark.parametrize("edit", ["threshold", "weights"])
def test_a_patched_graph_is_refused_by_its_hash_and_by_the_self_test(artifact: Path, tmp_path: Path, edit: str) -> None:
    art = _copy(artifact, tmp_path / "art")
    assert _patch_initializers(art, edit) >= 1
    with pytest.raises(ModelLoadError, match=r"model.onnx: sha256 .* the graph was changed after export"):
        SafeGenerator.load(art)
    _rehash(art)
    with pytest.raises(ModelLoadError, match=r"model.onnx: the graph (reproduces none|behaves as guard mode)") as info:
        SafeGenerator.load(art)
    assert "\n" not in str(info.value)


def test_a_manifest_rewritten_to_another_mode_is_refused(artifact: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["guard"]["mode"] = "flag"  # both copies say flag; the graph still shifts
    model = onnx.load(str(art / "model.onnx"))
    embedded = {k: v for k, v in manifest.items() if k != "files"}
    onnx.helper.set_model_props(model, {"manifest": json.dumps(embedded, sort_keys=True)})
    onnx.save(model, str(art / "model.onnx"))
    (art / "manifest.json").write_text(json.dumps(manifest))
    _rehash(art)
    with pytest.raises(ModelLoadError, match="behaves as guard mode 'shift', but the manifest says 'flag'"):
        SafeGenerator.load(art)


def test_a_pin_refuses_any_other_artifact(artifact: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256((artifact / "model.onnx").read_bytes()).hexdigest()
    assert SafeGenerator.load(artifact, pin=digest.upper()).sha256 == digest
    with pytest.raises(ModelLoadError, match="is not the pinned 000000000000"):
        SafeGenerator.load(artifact, pin="0" * 64)
    with pytest.raises(ModelLoadError, match="--pin 'abc': expected the 64 hex digits"):
        SafeGenerator.load(artifact, pin="abc")


@pytest.mark.parametrize("name", ["model.plan", "model.bf16.onnx"])
def test_an_edited_engine_or_engine_graph_is_refused(artifact: Path, tmp_path: Path, name: str) -> None:
    """The runtime never loads these, but an artifact whose engine (or the bf16 graph it came from) was edited
    after export is not the one exported: refused by its hash."""
    art = _copy(artifact, tmp_path / "art")
    (art / name).write_bytes(b"engine bytes as exported")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(b"engine bytes as exported").hexdigest()
    (art / "manifest.json").write_text(json.dumps(manifest))
    SafeGenerator.load(art)  # listed and intact: loads
    (art / name).write_bytes(b"engine bytes, edited")
    with pytest.raises(ModelLoadError, match=rf"{name}: sha256 differs from manifest.json: .*changed after export"):
        SafeGenerator.load(art)
