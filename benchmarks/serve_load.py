"""Load test of ``unlearn-cli serve``: concurrent clients on loopback vs the runtime in process.

    python benchmarks/serve_load.py [--artifact DIR] [--seconds 30] [--clients 32] [--images 4] [--out DIR]

Starts the real service on a free 127.0.0.1 port (start-up to ready is timed), runs ``--clients``
keep-alive clients that each POST ``{"n": 4, "seed": i}`` back to back for ``--seconds`` (or until
``--max-requests``; it stops by itself), and measures the runtime's own images/s at batch 64 in
this process before and after, with the server idle, both with ONNX Runtime's default threads
(all cores) and with the server's count; the ratio is taken against the faster of the two.
Writes serve_load.json and serve_load.md.
Without --artifact it exports faces-dcgan (or mnist-vae while faces-dcgan has no weights).
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_unlearn.serve.runtime import SafeGenerator  # noqa: E402  (torch-free, like the service)

HOST = "127.0.0.1"  # never anything else
CLI = [sys.executable, "-m", "feature_unlearn.cli"]


def export_zoo(into: Path) -> Path:
    name = "faces-dcgan" if (ROOT / "unlearn/zoo/weights/faces-dcgan.json").exists() else "mnist-vae"
    out = into / name
    subprocess.run([*CLI, "export", name, "--out", str(out), "--threads", "1"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a fresh connection (readiness polls, /metrics)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await _exchange(reader, writer, _request(method, path, body))
    finally:
        writer.close()


def _request(method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    start = head.index(b"content-length:") + len(b"content-length:")
    length = int(head[start : head.index(b"\r\n", start)])
    return int(head[9:12]), await reader.readexactly(length)


def start_server(artifact: Path, port: int, args: argparse.Namespace) -> tuple[subprocess.Popen, float]:
    """The service as users start it; seconds from spawn to GET /readyz == 200."""
    cmd = [*CLI, "serve", str(artifact), "--host", HOST, "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-delay-ms", str(args.max_delay_ms), "--max-images", str(max(64, args.images))]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k != "UNLEARN_SERVE_TOKEN"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    async def poll() -> float:
        while time.perf_counter() - t0 < 60:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {proc.communicate()[1][-2000:]}")
            try:
                if (await http(port, "GET", "/readyz"))[0] == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            await asyncio.sleep(0.01)
        raise SystemExit("the server was not ready within 60 s")

    return proc, asyncio.run(poll())


@dataclass
class Load:
    port: int
    images: int
    deadline: float
    max_requests: int
    seeds: itertools.count = field(default_factory=itertools.count)
    done: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each good request
    errors: list[str] = field(default_factory=list)

    async def client(self) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            while time.perf_counter() < self.deadline and len(self.done) + len(self.errors) < self.max_requests:
                seed = next(self.seeds)
                request = _request("POST", "/v1/generate", b'{"n": %d, "seed": %d}' % (self.images, seed))
                t = time.perf_counter()
                status, body = await _exchange(reader, writer, request)
                if status != 200 or (seed % 64 == 0 and len(json.loads(body)["images"]) != self.images):
                    self.errors.append(f"{status}: {body[:200]!r}")
                else:
                    self.done.append((t, time.perf_counter()))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(port: int, server_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    load = Load(port, args.images, start + args.warmup + args.seconds, args.max_requests)

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(load.client() for _ in range(args.clients))), args.seconds + args.warmup + 60)

    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    asyncio.run(main())
    server_cpu, client_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
    per_k = 1000 / max(1, len(load.done) * args.images)  # CPU seconds per image -> ms per image x 1000
    t_from = start + args.warmup
    window = [(s, e) for s, e in load.done if e >= t_from]
    span = max(e for _, e in window) - t_from
    lat = sorted(e - s for s, e in window)
    return {"requests": len(window), "errors": len(load.errors), "error_samples": load.errors[:5], "seconds": span,
            "images_per_s": len(window) * args.images / span, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "mean_ms": 1000 * statistics.fmean(lat),
            "server_cpu_ms_per_image": server_cpu * per_k, "client_cpu_ms_per_image": client_cpu * per_k}  # fmt: skip


def in_process(artifact: Path, batch: int, seconds: float, threads: Optional[int]) -> tuple[float, float]:
    """The runtime's images/s at ``batch`` (the median of 0.25 s slices) and its CPU ms per image."""
    gen = SafeGenerator.load(artifact, threads=threads)
    gen.generate(n=batch, seed=0)
    rates, end, seed, cpu = [], time.perf_counter() + seconds, 0, time.process_time()
    while time.perf_counter() < end:
        t, k = time.perf_counter(), 0
        while time.perf_counter() - t < 0.25:
            gen.generate(n=batch, seed=seed)
            seed, k = seed + 1, k + 1
        rates.append(k * batch / (time.perf_counter() - t))
    return statistics.median(rates), 1000 * (time.process_time() - cpu) / (seed * batch)


def server_batches(port: int) -> float:
    text = asyncio.run(http(port, "GET", "/metrics"))[1].decode()
    value = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("unlearn_serve_batch_images_")}
    return value["unlearn_serve_batch_images_sum"] / max(1.0, value["unlearn_serve_batch_images_count"])


def markdown(r: dict[str, Any]) -> str:
    h = r["http"]
    rows = [
        (f"HTTP images/s ({r['clients']} clients x {r['images_per_request']} images)", f"{h['images_per_s']:.0f}", ""),
        (f"in-process images/s (batch {r['baseline_batch']}, best of ORT threads)",
         " / ".join(f"{v:.0f} at {k}" for k, v in r["in_process_by_threads"].items()), ""),
        ("HTTP / in-process", f"{r['ratio']:.2f}", ">= 0.70"),
        ("p50 / p99 latency (ms)", f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f}", ""),
        ("p99 / p50", f"{r['p99_over_p50']:.2f}", "<= 3"),
        ("start-up to ready (s)", f"{r['startup_to_ready_s']:.2f}", "<= 5"),
        ("requests / errors", f"{h['requests']} / {h['errors']}", "0 errors"),
        ("mean model batch (images)", f"{r['mean_batch']:.1f}", ""),
        ("CPU ms per image: in-process / server / load client",
         f"{r['in_process_cpu_ms_per_image']:.3f} / {h['server_cpu_ms_per_image']:.3f} / {h['client_cpu_ms_per_image']:.3f}", ""),
    ]
    lines = [f"serve load: {r['model']} (guard {r['guard']}), {r['seconds']} s, {r['cpus']} CPUs, load avg {r['load_avg']}", "",
             "| metric | value | target |", "|---|---|---|"]  # fmt: skip
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, default=None, help="An export directory (default: export a zoo model).")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="Seconds of load before measuring.")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--images", type=int, default=4, help="Images per request.")
    ap.add_argument("--max-requests", type=int, default=500_000)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads in the server (default: its own).")
    ap.add_argument("--baseline-seconds", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "serve_load")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact or export_zoo(Path(tmp))
        result = measure(artifact, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_load.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'serve_load.json'} and serve_load.md")


def measure(artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    server_threads = args.threads or max(1, (os.cpu_count() or 1) - 1)  # what the server runs with
    choices = {"default": None, "server": server_threads}
    before = {k: in_process(artifact, 64, args.baseline_seconds / 4, t) for k, t in choices.items()}
    port = free_port()
    proc, ready = start_server(artifact, port, args)
    try:
        load = run_load(port, proc.pid, args)
        mean_batch = server_batches(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    after = {k: in_process(artifact, 64, args.baseline_seconds / 4, t) for k, t in choices.items()}
    rates = {k: statistics.fmean([before[k][0], after[k][0]]) for k in choices}
    best = max(rates, key=rates.__getitem__)
    baseline, cpu = rates[best], statistics.fmean([before[best][1], after[best][1]])
    manifest = SafeGenerator.load(artifact, threads=1).manifest
    return {"model": manifest.get("name"), "guard": (manifest.get("guard") or {}).get("mode", "off"), "clients": args.clients, "images_per_request": args.images, "seconds": args.seconds,
            "server": {"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms, "threads": server_threads},
            "startup_to_ready_s": ready, "http": load, "mean_batch": mean_batch, "baseline_batch": 64,
            "in_process_images_per_s": baseline, "in_process_cpu_ms_per_image": cpu, "in_process_threads": choices[best],
            "in_process_by_threads": {f"{k} ({choices[k] or 'all cores'})": rates[k] for k in choices},
            "ratio": load["images_per_s"] / baseline, "p99_over_p50": load["p99_ms"] / load["p50_ms"],
            "cpus": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)}  # fmt: skip


if __name__ == "__main__":
    main()
