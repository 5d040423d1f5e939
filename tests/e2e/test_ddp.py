"""Distributed fits as torchrun starts them: two CPU processes match one; two GPUs are one each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from feature_unlearn.unlearn.io import load_checkpoint
from feature_unlearn.unlearn.zoo import load_generator


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "generator").tensors


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    args = [
        "fit",
        "--no-robust",
        "--model",
        "mnist-vae",
        "--feature",
        "thick",
        "--steps",
        "6",
        "--steps-per-round",
        "6",
        "--batch",
        "16",
        "--n-collect",
        "1000",
        "--goal",
        "0",
        "--lr",
        "1e-3",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "feature_unlearn.cli", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "feature_unlearn.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    base = load_generator("mnist-vae").state_dict()
    assert any(not torch.equal(a[k], base[k]) for k in a)  # it trained
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (each torchrun process must get its own)"
)
def test_each_torchrun_process_gets_its_own_gpu(tmp_path: Path) -> None:
    code = (
        "from feature_unlearn.unlearn.device import resolve_runtime\n"
        "from feature_unlearn.unlearn.fit.distributed import init_dist\n"
        "d = init_dist('auto')\n"
        "print('device', d.rank, resolve_runtime('auto', 'fp32', d.local_rank).device, flush=True)\n"
    )
    script = tmp_path / "which.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    devices = sorted(line.split()[2] for line in proc.stdout.splitlines() if line.startswith("device"))
    assert devices == ["cuda:0", "cuda:1"]
