"""Abuse test of ``unlearn-cli serve``: good clients among hostile ones, on loopback.

    python -m benchmarks.serve_abuse [--artifact DIR] [--seconds 30] [--clients 64] [--no-token] [--out DIR]

Starts the real service on a free 127.0.0.1 port (with a random ``$UNLEARN_SERVE_TOKEN`` unless
--no-token) and runs ``--clients`` concurrent clients for ``--seconds``: half send good requests
(``{"n": 4, "seed": k}`` on kept-alive connections), a quarter send bad ones in a tight loop
(malformed JSON, unknown fields, latents of ±3.4e38, a wrong or no token, a 2 MB body, a wrong
Content-Type, a line that is not HTTP), an eighth hang up mid-body, and an eighth send half a
request head and stall until the server closes the connection. It reports the status counts
(the client's and the server's /metrics), the server's log lines per refused request, and the
good requests' latency. Targets: no response >= 500, <= 1 log line per refusal, p99 <= 3 x p50.
Without --artifact it exports the faces-dcgan zoo generator behind a shift guard (a random
direction, t = 1, as benchmarks/trust_cost.py does). Writes serve_abuse.json and serve_abuse.md.
Stdlib and asyncio only in this process; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # never anything else
CLI = [sys.executable, "-m", "feature_unlearn.cli"]
BUILD = """
import sys
from pathlib import Path
from benchmarks.models import load_bench_model, write_run
from feature_unlearn.export import ExportConfig, export_model
root = Path(sys.argv[1])
run = write_run(root / "faces-dcgan", load_bench_model("faces-dcgan"), guarded=True)
export_model(ExportConfig(source=str(run), out=root / "art", guard="shift"))
"""


def build_artifact(into: Path) -> Path:
    """faces-dcgan behind a shift guard, exported in a child process (this one stays torch-free)."""
    subprocess.run([sys.executable, "-c", BUILD, str(into)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return into / "art"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def request(path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:] if line))
    length = fields.get("content-length")
    body = await (reader.readexactly(int(length)) if length is not None else reader.read())
    return int(head[0][9:12]), fields, body


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        return await read_response(reader)
    finally:
        writer.close()


@dataclass
class Abuse:
    port: int
    token: Optional[str]
    z_dim: int
    deadline: float
    header_timeout_s: float
    statuses: Counter[str] = field(default_factory=Counter)  # "kind status" -> count, as the clients saw them
    latencies: list[float] = field(default_factory=list)  # good requests, seconds
    hangups: int = 0  # bodies abandoned mid-way (the server should count a 499 each)
    stalls: list[float] = field(default_factory=list)  # seconds until the server closed a stalled head
    errors: Counter[str] = field(default_factory=Counter)
    seeds: int = 0

    def auth(self, good: bool = True) -> dict[str, str]:
        if self.token is None:
            return {}
        return {"Authorization": f"Bearer {self.token if good else 'wrong-' + self.token}"}

    async def good(self) -> None:
        """``{"n": 4, "seed": k}`` back to back on one kept-alive connection."""
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            while time.monotonic() < self.deadline:
                self.seeds += 1
                body = json.dumps({"n": 4, "seed": self.seeds}).encode()
                started = time.perf_counter()
                writer.write(request("/v1/generate", body, {"Content-Type": "application/json", **self.auth()}))
                status, _, reply = await read_response(reader)
                self.statuses[f"good {status}"] += 1
                if status == 200 and len(json.loads(reply)["images"]) == 4:
                    self.latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    def bad_requests(self) -> list[tuple[str, bytes]]:
        json_type = {"Content-Type": "application/json"}
        huge = json.dumps({"latents": [[3.4e38] * self.z_dim]}).encode()
        bad = [
            ("malformed_json", request("/v1/generate", b'{"n": 4,', {**json_type, **self.auth()})),
            ("unknown_field", request("/v1/generate", b'{"n": 1, "guard": "off"}', {**json_type, **self.auth()})),
            ("huge_latents", request("/v1/generate", huge, {**json_type, **self.auth(), "Accept": "image/png"})),
            ("wrong_type", request("/v1/generate", b'{"n": 1}', {"Content-Type": "text/plain", **self.auth()})),
            ("oversized", request("/v1/generate", b"", {**json_type, **self.auth()}).replace(b"Content-Length: 0", b"Content-Length: 2000000")),
            ("not_http", b"\x16\x03\x01 GARBAGE\r\n\r\n"),
        ]  # fmt: skip
        if self.token is not None:
            bad += [("wrong_token", request("/v1/generate", b'{"n": 1}', {**json_type, **self.auth(False)})),
                    ("no_token", request("/v1/model", b"", {}, "GET"))]  # fmt: skip
        return bad

    async def bad(self, offset: int) -> None:
        """Every kind of bad request in turn, each on a fresh connection, as fast as the server answers."""
        bad = self.bad_requests()
        k = offset
        while time.monotonic() < self.deadline:
            kind, raw = bad[k % len(bad)]
            k += 1
            try:
                status, _, _ = await exchange(self.port, raw)
                self.statuses[f"{kind} {status}"] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors[f"{kind} {type(exc).__name__}"] += 1

    async def hang_up(self, offset: int) -> None:
        """Half a body, then the connection closes (with and without a valid token, in turn)."""
        k = offset
        while time.monotonic() < self.deadline:
            k += 1
            head = request("/v1/generate", b"", {"Content-Type": "application/json", **self.auth(k % 2 == 0)})
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(head.replace(b"Content-Length: 0", b"Content-Length: 64") + b'{"n": 4, "se')
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.close()
                self.hangups += 1
            except OSError as exc:
                self.errors[f"hang_up {type(exc).__name__}"] += 1

    async def stall(self) -> None:
        """Half a request head, then silence until the server closes the connection."""
        while time.monotonic() < self.deadline:
            reader, writer = await asyncio.open_connection(HOST, self.port)
            started = time.monotonic()
            writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            try:
                reply = await asyncio.wait_for(reader.read(), self.header_timeout_s + 10)
                self.stalls.append(time.monotonic() - started)
                self.statuses[f"stall {reply[9:12].decode() or 'closed'}"] += 1
            except asyncio.TimeoutError:
                self.statuses["stall held open"] += 1
            finally:
                writer.close()

    async def run(self, clients: int) -> None:
        roles = []
        for i in range(clients):  # 4 good, 2 bad, 1 hang-up, 1 stall in every 8
            role = i % 8
            roles.append(self.good() if role < 4 else self.bad(i) if role < 6 else self.hang_up(i) if role == 6 else self.stall())
        results = await asyncio.gather(*roles, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self.errors[f"client {type(r).__name__}: {str(r)[:80]}"] += 1


def start_server(artifact: Path, port: int, token: Optional[str], log: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [*CLI, "serve", str(artifact), "--host", HOST, "--port", str(port), *extra]
    env = {k: v for k, v in os.environ.items() if k != "UNLEARN_SERVE_TOKEN"}
    if token is not None:
        env["UNLEARN_SERVE_TOKEN"] = token
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if asyncio.run(exchange(port, request("/readyz", b"", {}, "GET")))[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server was not ready within 120 s")


def server_statuses(port: int, token: Optional[str]) -> dict[str, float]:
    """``path status`` -> count from the server's own /metrics (this request not included)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = asyncio.run(exchange(port, request("/metrics", b"", headers, "GET")))[2].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("unlearn_serve_requests_total{"):
            labels = dict(p.split("=", 1) for p in line[line.index("{") + 1 : line.index("}")].split(","))
            out[f"{labels['path'].strip(chr(34))} {labels['status'].strip(chr(34))}"] = float(line.split()[-1])
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    token = None if args.no_token else secrets.token_hex(16)
    port, log = free_port(), args.out / "serve_abuse.log"
    extra = ["--header-timeout-s", str(args.header_timeout_s)] + (["--threads", str(args.threads)] if args.threads else [])
    proc = start_server(artifact, port, token, log, extra)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        model = json.loads(asyncio.run(exchange(port, request("/v1/model", b"", headers, "GET")))[2])
        lines_before = len(log.read_text().splitlines())
        server_before = server_statuses(port, token)  # readiness polls answered 503 while the model loaded
        abuse = Abuse(port, token, int(model["z_dim"]), time.monotonic() + args.seconds, args.header_timeout_s)
        started = time.monotonic()
        asyncio.run(asyncio.wait_for(abuse.run(args.clients), args.seconds + args.header_timeout_s + 30))
        elapsed = time.monotonic() - started
        log_lines = log.read_text().splitlines()[lines_before:]
        server = {k: v - server_before.get(k, 0.0) for k, v in server_statuses(port, token).items()}
        server = {k: v for k, v in server.items() if v}
        healthy = asyncio.run(exchange(port, request("/readyz", b"", {}, "GET")))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return summarize(abuse, server, log_lines, elapsed, healthy, model, args, token is not None)


def summarize(abuse: Abuse, server: dict[str, float], log_lines: list[str], elapsed: float, healthy: bool,
              model: dict[str, Any], args: argparse.Namespace, token: bool) -> dict[str, Any]:  # fmt: skip
    client_5xx = sum(n for k, n in abuse.statuses.items() if k.split()[-1].isdigit() and int(k.split()[-1]) >= 500)
    server_5xx = sum(n for k, n in server.items() if int(k.split()[-1]) >= 500)
    refused_responses = sum(n for k, n in abuse.statuses.items() if not k.endswith(" 200"))
    refused = refused_responses + abuse.hangups  # stalls are counted among the responses ("stall 408")
    p50, p99 = percentile(abuse.latencies, 0.5), percentile(abuse.latencies, 0.99)
    return {
        "model": model.get("name"), "guard": (model.get("guard") or {}).get("mode"), "seconds": round(elapsed, 1),
        "clients": args.clients, "token": token, "header_timeout_s": args.header_timeout_s, "cpus": os.cpu_count(),
        "client_statuses": dict(sorted(abuse.statuses.items())), "server_statuses": dict(sorted(server.items())),
        "client_errors": dict(abuse.errors), "hangups": abuse.hangups,
        "stall_close_s": {"median": round(statistics.median(abuse.stalls), 2) if abuse.stalls else None,
                          "max": round(max(abuse.stalls), 2) if abuse.stalls else None, "count": len(abuse.stalls)},
        "responses_5xx": {"client": client_5xx, "server": server_5xx},
        "refused": refused, "log_lines": len(log_lines), "log_lines_per_refused": len(log_lines) / max(1, refused),
        "log_sample": log_lines[:10],
        "good_requests": len(abuse.latencies), "good_p50_ms": 1000 * p50, "good_p99_ms": 1000 * p99, "p99_over_p50": p99 / p50,
        "healthy_after": healthy,
        "targets_met": {"no_5xx": client_5xx == 0 and server_5xx == 0, "log_lines_per_refused_le_1": len(log_lines) <= refused,
                        "p99_le_3x_p50": p99 <= 3 * p50, "healthy_after": healthy},
    }  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    rows = [
        ("responses >= 500 (client seen / server /metrics)", f"{r['responses_5xx']['client']} / {r['responses_5xx']['server']}", "0"),
        ("refused requests (non-200 responses + hang-ups)", str(r["refused"]), ""),
        ("server log lines during the run", str(r["log_lines"]), ""),
        ("log lines per refused request", f"{r['log_lines_per_refused']:.4f}", "<= 1"),
        ("good requests", str(r["good_requests"]), ""),
        ("good p50 / p99 latency (ms)", f"{r['good_p50_ms']:.1f} / {r['good_p99_ms']:.1f}", ""),
        ("p99 / p50", f"{r['p99_over_p50']:.2f}", "<= 3"),
        ("stalled heads closed after (s, median / max)", f"{r['stall_close_s']['median']} / {r['stall_close_s']['max']}", f"~{r['header_timeout_s']}"),
        ("ready after the run", str(r["healthy_after"]), "True"),
    ]  # fmt: skip
    head = [f"serve abuse: {r['model']} (guard {r['guard']}), {r['clients']} clients, {r['seconds']} s, {r['cpus']} CPUs, "
            f"token {'on' if r['token'] else 'off'}", "", "| metric | value | target |", "|---|---|---|"]  # fmt: skip
    counts = ["", "| client saw | count |", "|---|---|", *(f"| {k} | {v} |" for k, v in r["client_statuses"].items())]
    server = ["", "| server /metrics (path status) | count |", "|---|---|", *(f"| {k} | {v:.0f} |" for k, v in r["server_statuses"].items())]
    return "\n".join(head + [f"| {a} | {b} | {c} |" for a, b, c in rows] + counts + server) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, default=None, help="An export directory (default: faces-dcgan behind a shift guard).")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--header-timeout-s", type=float, default=10.0, help="The server's --header-timeout-s.")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads in the server (default: its own).")
    ap.add_argument("--no-token", action="store_true", help="Serve without $UNLEARN_SERVE_TOKEN (no wrong-token requests).")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "serve_abuse")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.artifact or build_artifact(Path(tmp)), args)
    (args.out / "serve_abuse.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_abuse.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'serve_abuse.json'}, serve_abuse.md and the server's log serve_abuse.log")


if __name__ == "__main__":
    main()
