"""Load test of ``unlearn-cli serve``: concurrent clients on loopback vs the runtime in process.

    python -m benchmarks.serve_load [--artifact DIR] [--seconds 30] [--clients 32] [--images 4] [--out DIR]

``--clients`` keep-alive clients each POST ``{"n": 4, "seed": i}`` back to back for ``--seconds``
to the real service; before and after, with the server idle, this process times the runtime at
batch 64 with ONNX Runtime's default threads and with the server's, and HTTP is compared with the
faster. Without --artifact it exports faces-dcgan behind a shift guard in a child process: this
one imports no torch. The server, the client loop and the command line here serve serve_abuse.py too.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.measure import ROOT, Fn, interleave
from benchmarks.records import HttpLoad, ServeLoad

HOST, BATCH = "127.0.0.1", 64
EXPORT = "import sys, pathlib, benchmarks.inference as b; b.export_zoo(sys.argv[1], pathlib.Path(sys.argv[2]))"


def build_artifact(into: Path, name: str = "faces-dcgan") -> Path:
    """The zoo generator behind a shift guard (a random direction, t = 1), exported by a child process."""
    subprocess.run([sys.executable, "-c", EXPORT, name, str(into)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return into


def request(path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines + [f"{k}: {v}" for k, v in (headers or {}).items()]) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    length = fields.get("content-length")
    return int(head[0][9:12]), await (reader.read() if length is None else reader.readexactly(int(length)))


async def exchange(port: int, raw: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        return await read_response(reader)
    finally:
        writer.close()


class Server:
    """``unlearn-cli serve`` as users start it, on a free loopback port, its output in ``log``; stopped on exit."""

    def __init__(self, artifact: Path, log: Path, *options: str, token: Optional[str] = None) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port, self.token, self.log = int(s.getsockname()[1]), token, log
        env = {k: v for k, v in os.environ.items() if k != "UNLEARN_SERVE_TOKEN"}
        env |= {"UNLEARN_SERVE_TOKEN": token} if token else {}
        cmd = [sys.executable, "-m", "feature_unlearn.cli", "serve", str(artifact), "--port", str(self.port)]
        cmd += ["--host", HOST, *options]
        started = time.perf_counter()
        with log.open("w") as sink:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        while self.proc.poll() is None and time.perf_counter() - started < 120:
            try:
                if self.get("/readyz")[0] == 200:
                    self.ready_s = time.perf_counter() - started  # spawn to ready
                    return
            except OSError:
                time.sleep(0.01)
        self.__exit__()
        raise SystemExit(f"the server was not ready: {log.read_text()[-2000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token and path != "/readyz" else {}
        return asyncio.run(exchange(self.port, request(path, headers=auth, method="GET")))

    def metrics(self) -> dict[str, float]:
        """/metrics samples by name with labels (``unlearn_serve_requests_total{path="/x",status="200"}``)."""
        lines = self.get("/metrics")[1].decode().splitlines()
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines if ln and not ln.startswith("#")}

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@dataclass(frozen=True)
class LoadOptions:
    seconds: float = 30.0
    warmup: float = 2.0  # seconds of load before measuring
    clients: int = 32
    images: int = 4  # per request
    max_batch: int = 64  # the server's
    max_delay_ms: float = 5.0  # the server's
    threads: int = os.cpu_count() or 1  # the server's ONNX Runtime threads (its default)
    baseline_seconds: float = 4.0
    accept: str = "application/json"  # the response format asked for: application/json (PNGs) or application/x-npy


async def generate(
    port: int, n: int, seed: int, step: int, until: float, headers: dict[str, str], done: list[tuple[float, float]]
) -> tuple[Counter[int], list[str]]:
    """``{"n": n, "seed": k}`` back to back on one kept-alive connection until ``until``: (start, end) of the good
    replies into ``done``; the statuses and the errors."""
    statuses, errors, headers = Counter[int](), list[str](), {"Content-Type": "application/json", **headers}
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < until:
            seed, started = seed + step, time.perf_counter()
            writer.write(request("/v1/generate", b'{"n": %d, "seed": %d}' % (n, seed), headers))
            status, body = await read_response(reader)
            statuses[status] += 1
            # every 64th body is checked: parsing them all would take CPU from the server on a small machine
            if status != 200 or (seed % 64 == 0 and images_in(body, headers) != n):
                errors.append(f"{status}: {body[:200]!r}")
            else:
                done.append((started, time.perf_counter()))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()
    return statuses, errors


def images_in(body: bytes, headers: dict[str, str]) -> int:
    """How many images a 200 reply holds: the JSON list, or the .npy array's first axis."""
    if headers.get("Accept") == "application/x-npy":
        return int(np.load(io.BytesIO(body), allow_pickle=False).shape[0])
    return len(json.loads(body)["images"])


def p50_p99_ms(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds) or [float("nan")]
    return 1e3 * ordered[len(ordered) // 2], 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_load(server: Server, o: LoadOptions) -> HttpLoad:
    start, done = time.perf_counter(), list[tuple[float, float]]()
    until = start + o.warmup + o.seconds
    cpu = cpu_seconds(server.proc.pid), time.process_time()

    async def clients() -> list[tuple[Counter[int], list[str]]]:
        return await asyncio.gather(
            *(
                generate(server.port, o.images, i, o.clients, until, {"Accept": o.accept}, done)
                for i in range(o.clients)
            )
        )

    errors = [e for _, errs in asyncio.run(clients()) for e in errs]
    if not done:
        raise RuntimeError(f"no request succeeded: {errors[:1]}")
    per_image = [1e3 * (cpu_seconds(server.proc.pid) - cpu[0]), 1e3 * (time.process_time() - cpu[1])]
    per_image = [ms / max(1, len(done) * o.images) for ms in per_image]
    lat = [e - s for s, e in done if e >= start + o.warmup]  # after the warm-up only
    span = max(e for _, e in done) - start - o.warmup
    for error in errors[:5]:
        print(f"serve load: {error}", file=sys.stderr)
    return HttpLoad(len(lat), len(errors), span, len(lat) * o.images / span, *p50_p99_ms(lat), *per_image)


def in_process(artifact: Path, threads: dict[str, Optional[int]], seconds: float) -> dict[str, tuple[float, float]]:
    """Per thread count: the runtime's images/s at batch 64, and its CPU ms per image (the harness's timer)."""
    from feature_unlearn.serve.runtime import SafeGenerator  # the service's runtime (no torch)

    gens = {k: SafeGenerator.load(artifact, threads=t) for k, t in threads.items()}
    fns: dict[str, Fn] = {k: partial(g.generate, n=BATCH, seed=0) for k, g in gens.items()}
    timings, _ = interleave(fns, 1, seconds / len(fns), (8, 10_000), 4)
    return {k: (BATCH / t.median_s, 1e3 * t.cpu_s / (len(t.samples) * BATCH)) for k, t in timings.items()}


def measure(artifact: Path, o: LoadOptions, log: Path) -> ServeLoad:
    threads = {"default (all cores)": None, f"server ({o.threads})": o.threads}
    before = in_process(artifact, threads, o.baseline_seconds / 2)
    options = ["--max-batch", str(o.max_batch), "--max-delay-ms", str(o.max_delay_ms), "--threads", str(o.threads)]
    with Server(artifact, log, *options, "--max-images", str(max(64, o.images))) as server:
        http, m = http_load(server, o), server.metrics()
    after = in_process(artifact, threads, o.baseline_seconds / 2)
    rates = {k: statistics.fmean([before[k][0], after[k][0]]) for k in threads}
    best = max(rates, key=rates.__getitem__)
    cpu = statistics.fmean([before[best][1], after[best][1]])
    manifest = json.loads((artifact / "manifest.json").read_text())
    batch = m["unlearn_serve_batch_images_sum"] / max(1.0, m["unlearn_serve_batch_images_count"])
    model, guard = manifest.get("name"), (manifest.get("guard") or {}).get("mode", "off")
    load = os.cpu_count(), round(os.getloadavg()[0], 2)
    return ServeLoad(
        model, guard, o.clients, o.images, o.seconds, server.ready_s, http, batch, BATCH, rates, cpu, *load, o.accept
    )


def table(head: str, rows: list[tuple[str, Any]]) -> str:
    return head + "\n\n" + "\n".join(["| metric | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]) + "\n"


def markdown(r: ServeLoad) -> str:
    h, by_threads = r.http, " / ".join(f"{v:.0f} at {k}" for k, v in r.in_process_by_threads.items())
    cpu = f"{r.in_process_cpu_ms_per_image:.3f} / {h.server_cpu_ms_per_image:.3f} / {h.client_cpu_ms_per_image:.3f}"
    rows: list[tuple[str, Any]] = [
        (f"HTTP images/s ({r.clients} clients x {r.images_per_request} images)", f"{h.images_per_s:.0f}"),
        (f"in-process images/s (batch {r.baseline_batch}, by ONNX Runtime threads)", by_threads),
        ("HTTP / in-process (target ≥ 0.7)", f"{r.ratio:.2f}"),
        ("p50 / p99 latency ms (target p99 ≤ 3 × p50)", f"{h.p50_ms:.1f} / {h.p99_ms:.1f}"),
        ("start-up to ready s (target ≤ 5)", f"{r.startup_to_ready_s:.2f}"),
        ("requests / errors", f"{h.requests} / {h.errors}"),
        ("mean model batch (images)", f"{r.mean_batch:.1f}"),
        ("CPU ms per image: in-process / server / load client", cpu),
    ]
    title = f"serve load: {r.model} (guard {r.guard}), Accept {r.accept}, {r.seconds} s, {r.cpus} CPUs"
    return table(f"{title}, load avg {r.load_avg}", rows)


def cli(
    name: str, doc: str, options: type, measure: Callable[[Path, Any, Path], Any], md: Callable[[Any], str]
) -> None:
    """A serve test's command line: ``options``' fields as flags, ``--artifact``; JSON, markdown and log in --out."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--artifact", type=Path, help="An export directory (default: faces-dcgan behind a shift guard).")
    for f in dataclasses.fields(options):
        kind: dict[str, Any] = {"action": "store_true"} if f.default is False else {"type": type(f.default)}
        ap.add_argument("--" + f.name.replace("_", "-"), default=f.default, **kind)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / name)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        o = options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options)})
        result = measure(args.artifact or build_artifact(Path(tmp) / "art"), o, args.out / f"{name}.log")
    data = result if isinstance(result, dict) else dataclasses.asdict(result)
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(md(result))
    print(md(result) + f"\nwrote {name}.json, {name}.md and {name}.log in {args.out}")


if __name__ == "__main__":
    cli("serve_load", __doc__, LoadOptions, measure, markdown)
