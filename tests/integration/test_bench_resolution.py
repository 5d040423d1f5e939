"""The bench's cost-against-resolution section (benchmarks/resolution.py): its plan, its verdict, a tiny real run.

No assertion on speed (shared, noisy machines): the rows must be complete, consistent and sane.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.config import Run, Scale
from benchmarks.harness import run_bench
from benchmarks.records import Results, load
from benchmarks.resolution import RESOLUTIONS, HttpRow, ResolutionBench, dominance, plan
from feature_unlearn.cli import app

TINY = Scale(
    skip=("inference", "memory", "fit", "unlearning", "serve"),
    compile_modes=(),
    warmup=1,
    seconds=0.02,
    calls=(4, 20),
    rounds=2,
    retries=0,
)


def http(res: int, batch: int, server_ms: float, model_ms: float) -> HttpRow:
    return HttpRow(res, batch, 2, 10, 0, 100.0, 5.0, 9.0, float(batch), server_ms, 0.01, model_ms, 200.0)


def test_plan_follows_the_bench_modes() -> None:
    quick, full, tiny = plan(Run(quick=True)), plan(Run()), plan(Run(scale=TINY))
    assert quick.resolutions == full.resolutions == RESOLUTIONS == (32, 64, 128, 256)
    assert quick.batches == full.batches == (1, 64) and quick.compile and full.compile
    assert quick.http_seconds < full.http_seconds <= 10
    assert tiny.resolutions == (32, 64) and tiny.batches == (1, 4) and not tiny.compile
    assert plan(Run(quick=True, batches=(16,))).batches == (16,)
    assert "resolution" in CliRunner().invoke(app, ["bench", "--help"]).output


def test_the_verdict_names_where_the_generator_starts_to_dominate() -> None:
    rows = (http(32, 64, 0.4, 0.1), http(64, 64, 1.0, 0.45), http(128, 64, 3.0, 2.0), http(256, 64, 10.0, 8.0))
    rows += (http(32, 1, 1.0, 0.6), http(64, 1, 2.0, 1.5))
    rows += (http(32, 4, 1.0, 0.1),)
    (at64, at1, at4, blank) = dominance(ResolutionBench({}, 1, http=rows))
    assert "25% at 32×32, 45% at 64×64, 67% at 128×128, 80% at 256×256" in at64
    assert "up to 64×64 HTTP, JSON and PNG encoding cost the server more CPU per image than the generator" in at64
    assert "from 128×128 the generator is the dominant cost" in at64
    assert "the generator is the dominant cost at every resolution here" in at1
    assert "cost the server more CPU than the generator at every resolution here" in at4 and blank == ""


@pytest.mark.slow
def test_a_tiny_resolution_run_measures_every_backend_and_the_service(tmp_path: Path) -> None:
    cfg = Run(out=tmp_path, threads=1, scale=TINY)
    res = run_bench(cfg, "pytest")
    rb = res.resolution
    assert rb is not None and res.inference is None and not rb.failures, rb and rb.failures
    assert load(Results, json.loads(cfg.json_path.read_text())) == res  # --report-only can rebuild it
    backends = ("torch-eager", "onnxruntime-cpu")
    assert {(r.resolution, r.backend, r.batch) for r in rb.rows} == {
        (s, b, n) for s in (32, 64) for b in backends for n in (1, 4)
    }
    mflop = {m.resolution: m.mflop_per_image for m in rb.models}
    assert rb.arch["kind"] == "dcgan" and "resolution" not in rb.arch and 4 < mflop[64] / mflop[32] < 8
    for r in rb.rows:
        assert r.images_per_s > 0 and r.p99_ms >= r.p50_ms > 0 and 4 <= r.calls <= 20 and r.cpu_ms_per_image > 0
        assert r.gflops == pytest.approx(mflop[r.resolution] * r.images_per_s / 1e3, rel=0.01)
    assert {(h.resolution, h.batch) for h in rb.http} == {(s, n) for s in (32, 64) for n in (1, 4)}
    for h in rb.http:
        assert h.requests > 0 and h.errors == 0 and h.images_per_s > 0 and h.p99_ms >= h.p50_ms > 0
        assert h.server_cpu_ms_per_image > 0 and h.model_cpu_ms_per_image and h.mean_model_batch >= 1
        assert h.model_share is not None and 0 < h.model_share <= 1
    text = (tmp_path / "RESULTS.md").read_text()
    for line in ("## Cost against resolution", "Random-initialised generators of faces-dcgan's DCGAN family"):
        assert line in text, line
    assert "| 64×64 | 118.8 | onnxruntime-cpu | 4 |" in text and "HTTP (16 clients) | 4 |" in text
    assert text.count("image(s) per request: the model's share of the server's CPU per image is") == 2
    assert (tmp_path / "resolution.png").read_bytes()[:4] == b"\x89PNG"
