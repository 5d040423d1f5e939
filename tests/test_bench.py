"""The benchmark harness at a tiny scale: real measurements, checked for structure and sanity only.

No timing assertions: these machines are shared and noisy; speed goals live in RESULTS.md as ratios.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.config import BenchConfig, make_config
from benchmarks.export_speed import flops_per_image as hook_flops
from benchmarks.fit_speed import measure
from benchmarks.fitbench import configs
from benchmarks.harness import noisy, run_bench
from benchmarks.memory import run_isolated
from benchmarks.models import flops_per_image, load_bench_model, stand_in
from benchmarks.report import markdown
from benchmarks.targets import all_targets
from benchmarks.timing import interleave
from benchmarks.unlearning import run_unlearning
from feature_unlearn.cli import app

TINY: dict[str, Any] = {"models": ("mnist-vae",), "batches": (1, 4), "compile_modes": (), "warmup": 1, "seconds_per_point": 0.02,
        "min_calls": 4, "max_calls": 20, "rounds": 2, "overhead_seconds": 0.05, "retries": 0, "memory": False, "fit": False, "unlearning": False, "serve": False}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchConfig, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(out=out, work=out / "work", threads=1, **TINY)
    return cfg, run_bench(cfg, command="pytest")


def test_interleave_times_every_contender_and_reports_a_broken_one() -> None:
    def broken() -> None:
        raise RuntimeError("no compiler here")

    timings, failed = interleave({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.003), "broken": broken},
                                 warmup=1, budget_s=0.02, lo=4, hi=50, rounds=2)  # fmt: skip
    assert set(timings) == {"fast", "slow"} and failed == {"broken": "RuntimeError: no compiler here"}
    for t in timings.values():
        assert len(t.samples_s) >= 4 and t.p99_ms >= t.p50_ms > 0 and t.images_per_s(8) > 0


def test_inference_rows_have_the_documented_fields_and_sane_values(
    tiny_bench: tuple[BenchConfig, dict[str, Any]],
) -> None:
    cfg, res = tiny_bench
    rows = res["inference"]
    assert {(r["backend"], r["batch"]) for r in rows} == {
        (b, n) for b in ("torch-eager", "onnxruntime-cpu") for n in (1, 4)
    }
    peak = res["machine"]["gemm_peak_gflops"]
    assert peak > 1
    for r in rows:
        assert {"backend", "model", "batch", "images_per_s", "p50_ms", "p99_ms"} <= set(r)
        assert r["model"] == "mnist-vae" and r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert 0 <= r["foreign_cores"] <= (os.cpu_count() or 1)
        assert r["roofline_fraction"] == pytest.approx(r["gflops"] / peak, abs=1e-3)
        assert r["gflops"] == pytest.approx(
            res["models"][0]["mflop_per_image"] * 1e6 * r["images_per_s"] / 1e9, rel=0.01
        )
    assert {s["backend"] for s in res["skipped"]} >= ({"tensorrt-fp16"} if not torch.cuda.is_available() else set())


def test_guard_overhead_comes_from_two_measured_numbers(tiny_bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    cfg, res = tiny_bench
    g = res["guard_overhead"]
    assert {(r["backend"], r["batch"]) for r in g["rows"]} == {
        (b, n) for b in ("onnxruntime-cpu", "torch-eager") for n in (1, 4)
    }
    for r in g["rows"]:
        assert r["guarded_ms"] > 0 and r["unguarded_ms"] > 0 and r["calls"] >= 4
        assert r["overhead_of_medians"] == pytest.approx(r["guarded_ms"] / r["unguarded_ms"] - 1, abs=2e-3)
        assert r["rounds"] == 8 * cfg.rounds and r["calls"] % r["rounds"] == 0 and -0.9 < r["overhead"] < 10
    assert g["fraction"] is None  # batch 64 (the target's batch) was not measured here


def test_outputs_are_written_with_tables_and_plots(tiny_bench: tuple[BenchConfig, dict[str, Any]]) -> None:
    cfg, res = tiny_bench
    saved = json.loads(cfg.results_json.read_text())
    assert saved["inference"] == res["inference"] and saved["machine"]["command"] == "pytest"
    text = (cfg.out / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Targets", "## Falls short", "## Inference", "### mnist-vae", "### Guard overhead",
                    "| backend | batch | images/s | p50 ms | p99 ms |"):  # fmt: skip
        assert heading in text, heading
    for png in ("throughput.png", "roofline.png"):
        assert (cfg.out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noisy_names_the_disturbed_measurements() -> None:
    res: dict[str, Any] = {"machine": {"cores": 2, "foreign_cores_at_section_start": {"inference": 0.0, "fit": 0.9}},
                           "inference": [{"model": "m", "batch": 64, "foreign_cores": 1.1}, {"model": "m", "batch": 1, "foreign_cores": 0.05}]}  # fmt: skip
    text = noisy(res)
    assert text is not None and "m batch 64 (1.10 cores)" in text and "fit section start (0.90 cores)" in text and "batch 1 " not in text
    res["machine"]["foreign_cores_at_section_start"]["fit"] = 0.1
    res["inference"][0]["foreign_cores"] = 0.1
    assert noisy(res) is None


def test_flop_counter_agrees_with_the_hook_count_and_stand_ins_match_the_recipes() -> None:
    g = load_bench_model("mnist-dcgan").generator
    assert flops_per_image(g, 32) == pytest.approx(hook_flops(g, 32))
    faces, meta = stand_in("faces-dcgan")
    assert meta.arch["channels"] == 3 and faces(torch.zeros(2, int(meta.arch["z_dim"]))).shape == (2, 3, 32, 32)


def test_memory_probe_runs_in_a_fresh_process(tiny_bench: tuple[BenchConfig, dict[str, Any]], tmp_path: Path) -> None:
    from benchmarks.models import write_run
    from feature_unlearn.export import ExportConfig, export_model

    run = write_run(tmp_path / "run", load_bench_model("mnist-vae"), guarded=True)
    export_model(ExportConfig(source=str(run), out=tmp_path / "onnx"))
    r = run_isolated("onnxruntime-cpu", run, tmp_path / "onnx" / "model.onnx", batch=8, z_dim=16, threads=1, calls=2)
    assert r["peak_mb"] >= r["steady_mb"] > 0 and r["hwm_mb"] >= r["peak_mb"] - 1 and r["working_mb"] >= 0


def test_fit_speed_measures_the_real_training_step() -> None:
    r = measure("mnist-vae", "fp32", False, steps=2, warmup=1, batch=8)
    assert r["steps_per_s"] > 0 and r["warmup_s"] > 0
    assert [c[:3] for c in configs(cuda=False)] == [
        ("eager", "fp32", False),
        ("eager", "bf16", False),
        ("compile", "fp32", True),
        ("compile", "bf16", True),
    ]
    assert ("eager", "fp16", False, "cuda") in configs(cuda=True)


def test_unlearning_table_from_a_tiny_fit_and_evaluation(tmp_path: Path) -> None:
    overrides = (("steps_per_round", 4), ("n_collect", 300), ("probe", 100), ("pool", 2048), ("checkpoint_every", 100))
    cfg = BenchConfig(work=tmp_path, unlearn_models=("mnist-vae", "faces-made-up"), unlearn_steps=4, unlearn_overrides=overrides,
                      eval_n=200, attack_starts=8, attack_steps=2)  # fmt: skip
    un = run_unlearning(cfg)
    (row,) = un["rows"]
    assert un["skipped"] == [{"model": "faces-made-up", "reason": "zoo weights not shipped yet"}]
    assert row["feature"] == "thick" and row["fit"]["steps"] == 4 and row["n"] == 200
    assert set(row["target_rate"]) >= {"original", "original+guard", "unlearned", "unlearned+guard"}
    assert all(0 <= v <= 1 for v in row["target_rate"].values()) and all(
        0 <= v <= 1 for v in row["pgd_success"].values()
    )
    assert row["worst_flip"]["rate"] == max(row["flips_non_target"].values())
    assert (tmp_path / "mnist-vae" / "evaluation.json").is_file()
    res: dict[str, Any] = {"machine": {"command": "x", "date": "d", "cpu": "c", "cores": 2, "threads": 2, "torch": "t", "onnxruntime": "o", "gpu": None,
                       "gemm_peak_gflops": 1.0, "gemm_peak_start": 1.0, "gemm_peak_end": 1.0, "load_start": 0.0, "load_end": 0.0, "wall_s": 1.0},
           "unlearning": un}  # fmt: skip
    res["targets"] = all_targets(res)
    names = {t["name"] for t in res["targets"]}
    assert "residual rate (unlearned+guard) / original" in names and "FID unlearned / original" in names
    assert "## Unlearning (auditor-graded)" in markdown(res) and "| mnist-vae | thick |" in markdown(res)


def test_bench_cli_refuses_bad_input_and_presets_compose() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--model", "celeba-gan"])
    assert result.exit_code == 2 and "--model 'celeba-gan'" in result.output and "Traceback" not in result.output
    assert runner.invoke(app, ["bench", "--batch", "0"]).exit_code == 2
    quick = make_config(quick=True, threads=1, fit=False)
    assert (
        quick.models == ("mnist-vae", "mnist-dcgan")
        and quick.batches == (1, 64)
        and quick.threads == 1
        and not quick.fit
    )
    assert make_config().batches == (1, 16, 64, 256) and make_config().eval_n == 10_000


def test_a_disturbed_point_is_timed_again_and_the_least_disturbed_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import inference
    from benchmarks.timing import Timing

    foreign = iter([1.0, 0.6, 0.9])
    calls: list[int] = []

    def fake(fns: dict[str, Any], warmup: int, *args: Any) -> tuple[dict[str, Timing], dict[str, str]]:
        calls.append(warmup)
        f = next(foreign)
        return {"x": Timing((f,), 0.0, f)}, {}

    monkeypatch.setattr(inference, "interleave", fake)
    monkeypatch.setattr(inference.time, "sleep", lambda s: None)
    timings, _, attempts = inference.timed({"x": lambda: None}, BenchConfig(retries=2, warmup=3))
    assert attempts == 3 and calls == [3, 1, 1] and timings["x"].foreign_cores == 0.6


def test_report_only_rebuilds_from_the_json_and_disturbed_points_are_not_judged(
    tiny_bench: tuple[BenchConfig, dict[str, Any]], tmp_path: Path
) -> None:
    from benchmarks.targets import mark_disturbed

    cfg, res = tiny_bench
    out = tmp_path / "again"
    result = CliRunner().invoke(app, ["bench", "--report-only", "--json", str(cfg.results_json), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "## Inference" in (out / "RESULTS.md").read_text() and (out / "throughput.png").is_file()
    fake = {"inference": [{"model": "m", "batch": 64, "foreign_cores": 0.9}], "guard_overhead": {"rows": []}}
    (t,) = mark_disturbed(fake, [{"name": "ORT guarded / torch eager, batch 64", "model": "m", "met": False, "detail": "d"}])
    assert t["met"] is None and "0.90 cores" in t["detail"]
