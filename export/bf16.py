"""bf16: the guarded module as a ``torch.export`` program, saved as JSON + safetensors.

ONNX Runtime has no bf16 convolution on CPU; oneDNN's bf16 kernels (avx512_bf16, AMX) do. The
whole ``ExportModule`` is exported (fp32 guard, bf16 channels_last generator, fp32 image check,
uint8 conversion) with a dynamic batch, then written without pickle: the program through
PyTorch's JSON serializer, every tensor through safetensors. ``serve.backends.load_program``
rebuilds it; export validates that rebuilt program, the one the runtime will run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors
from torch._export.serde import serialize as serde

from feature_unlearn.export.errors import ExportError
from feature_unlearn.export.module import ExportModule
from feature_unlearn.export.spec import ExportSpec
from feature_unlearn.serve.backends import CONSTANT, PROGRAM_FORMAT, program_files
from feature_unlearn.unlearn.io import atomic_write


def export_program(module: ExportModule, spec: ExportSpec) -> torch.export.ExportedProgram:
    z = torch.randn(spec.trace_batch, module.z_dim, generator=torch.Generator().manual_seed(spec.seed))
    batch = torch.export.Dim(spec.batch_axis, min=1)
    try:
        with torch.no_grad():
            return torch.export.export(module, (z,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types; all mean "this module does not export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.export (bf16 program) failed: {first[:300]}") from exc


def _tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    tensors = {k: v.detach().contiguous() for k, v in program.state_dict.items()}
    for k, v in program.constants.items():
        if not isinstance(v, torch.Tensor):
            raise ExportError(f"bf16 program: constant {k!r} is a {type(v).__name__}, not a tensor (not serialisable)")
        tensors[CONSTANT + k] = v.detach().contiguous()
    return tensors


def save_program(module: ExportModule, spec: ExportSpec, directory: Path) -> dict[str, Any]:
    """Write model.bf16.json and model.bf16.safetensors into ``directory``; returns what was written."""
    program = export_program(module, spec)
    serialized = serde.serialize(program)
    doc = {
        "format": PROGRAM_FORMAT,
        "torch": torch.__version__,
        "memory_format": "channels_last",
        "parameters": list(program.graph_signature.parameters),
        "outputs": list(spec.output_names),
        "program": json.loads(serialized.exported_program),
    }
    program_path, weights_path = program_files(directory)
    text, weights = json.dumps(doc).encode(), save_tensors(_tensors(program))
    atomic_write(program_path, lambda tmp: tmp.write_bytes(text))
    atomic_write(weights_path, lambda tmp: tmp.write_bytes(weights))
    return {"exporter": "torch.export", "torch": torch.__version__, "memory_format": "channels_last"}
