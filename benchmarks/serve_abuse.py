"""Abuse test of ``unlearn-cli serve``: good clients among hostile ones, on loopback.

    python -m benchmarks.serve_abuse [--artifact DIR] [--seconds 30] [--clients 64] [--no-token] [--out DIR]

The real service (with a random ``$UNLEARN_SERVE_TOKEN`` unless --no-token) gets ``--clients``
concurrent clients for ``--seconds``: half send good requests (``{"n": 4, "seed": k}``, kept-alive),
a quarter bad ones in a tight loop (malformed JSON, unknown fields, latents of ±3.4e38, a wrong or
no token, a 2 MB body, a wrong Content-Type, a line that is not HTTP), an eighth hang up mid-body
and an eighth send half a head and stall until the server closes. Reported: status counts (the
clients' and the server's /metrics), server log lines per refusal, good requests' latency.
Targets: no response >= 500, <= 1 log line per refusal, p99 <= 3 x p50, ready afterwards.
Without --artifact it exports faces-dcgan behind a shift guard (in a child process: no torch here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.serve_load import HOST, ROOT, Server, build_artifact, exchange, read_response, request


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

    def headers(self, good_token: bool = True, kind: str = "application/json") -> dict[str, str]:
        token = {} if self.token is None else {"Authorization": f"Bearer {'' if good_token else 'wrong-'}{self.token}"}
        return {"Content-Type": kind, **token}

    async def good(self, seed: int) -> None:
        """``{"n": 4, "seed": k}`` back to back on one kept-alive connection."""
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            while time.monotonic() < self.deadline:
                seed, started = seed + 1000, time.perf_counter()
                writer.write(request("/v1/generate", b'{"n": 4, "seed": %d}' % seed, self.headers()))
                status, reply = await read_response(reader)
                self.statuses[f"good {status}"] += 1
                if status == 200 and len(json.loads(reply)["images"]) == 4:
                    self.latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    def bad_requests(self) -> list[tuple[str, bytes]]:
        huge = json.dumps({"latents": [[3.4e38] * self.z_dim]}).encode()
        bad = [
            ("malformed_json", request("/v1/generate", b'{"n": 4,', self.headers())),
            ("unknown_field", request("/v1/generate", b'{"n": 1, "guard": "off"}', self.headers())),
            ("huge_latents", request("/v1/generate", huge, {**self.headers(), "Accept": "image/png"})),
            ("wrong_type", request("/v1/generate", b'{"n": 1}', self.headers(kind="text/plain"))),
            ("oversized", request("/v1/generate", b"", self.headers()).replace(b"th: 0", b"th: 2000000")),
            ("not_http", b"\x16\x03\x01 GARBAGE\r\n\r\n"),
        ]
        if self.token is not None:
            bad.append(("wrong_token", request("/v1/generate", b'{"n": 1}', self.headers(good_token=False))))
            bad.append(("no_token", request("/v1/model", method="GET")))
        return bad

    async def bad(self, k: int) -> None:
        """Every kind of bad request in turn, each on a fresh connection, as fast as the server answers."""
        bad = self.bad_requests()
        while time.monotonic() < self.deadline:
            kind, raw = bad[k % len(bad)]
            k += 1
            try:
                self.statuses[f"{kind} {(await exchange(self.port, raw))[0]}"] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors[f"{kind} {type(exc).__name__}"] += 1

    async def hang_up(self, k: int) -> None:
        """Half a body, then the connection closes (with and without a valid token, in turn)."""
        while time.monotonic() < self.deadline:
            k += 1
            head = request("/v1/generate", b"", self.headers(good_token=k % 2 == 0)).replace(b"th: 0", b"th: 64")
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(head + b'{"n": 4, "se')
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

    def role(self, i: int) -> Coroutine[Any, Any, None]:
        """4 good, 2 bad, 1 hang-up and 1 stall in every 8 clients."""
        kind = i % 8
        return self.good(i) if kind < 4 else self.bad(i) if kind < 6 else self.hang_up(i) if kind == 6 else self.stall()

    async def run(self, clients: int) -> None:
        for r in await asyncio.gather(*(self.role(i) for i in range(clients)), return_exceptions=True):
            if isinstance(r, BaseException):
                self.errors[f"client {type(r).__name__}: {str(r)[:80]}"] += 1


def server_statuses(server: Server) -> Counter[str]:
    """``path status`` -> count from the server's own /metrics."""
    out: Counter[str] = Counter()
    for name, value in server.metrics().items():
        if name.startswith("unlearn_serve_requests_total{"):
            labels = dict(p.split("=", 1) for p in name[name.index("{") + 1 : -1].replace('"', "").split(","))
            out[f"{labels['path']} {labels['status']}"] = int(value)
    return out


def measure(artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    token = None if args.no_token else secrets.token_hex(16)
    options = [
        "--header-timeout-s",
        str(args.header_timeout_s),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    with Server(artifact, args.out / "serve_abuse.log", *options, token=token) as server:
        model = json.loads(server.get("/v1/model")[1])
        lines_before, server_before = len(server.log.read_text().splitlines()), server_statuses(server)
        abuse = Abuse(server.port, token, int(model["z_dim"]), time.monotonic() + args.seconds, args.header_timeout_s)
        started = time.monotonic()
        asyncio.run(asyncio.wait_for(abuse.run(args.clients), args.seconds + args.header_timeout_s + 30))
        elapsed = round(time.monotonic() - started, 1)
        log_lines = server.log.read_text().splitlines()[lines_before:]
        statuses = server_statuses(server) - server_before  # the run's only (not the start's readiness 503s)
        healthy = server.get("/readyz")[0] == 200
    return summarize(abuse, statuses, log_lines, healthy) | {"model": model.get("name"), "seconds": elapsed}


def summarize(abuse: Abuse, server: Counter[str], log_lines: list[str], healthy: bool) -> dict[str, Any]:
    fives = [n for k, n in abuse.statuses.items() if k[-3:].isdigit() and int(k[-3:]) >= 500]
    fives_server = [n for k, n in server.items() if int(k[-3:]) >= 500]
    refused = sum(n for k, n in abuse.statuses.items() if not k.endswith(" 200")) + abuse.hangups  # stalls: 408s
    ordered = sorted(abuse.latencies) or [math.nan]
    p50, p99 = (1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99))
    stalls = f"{statistics.median(abuse.stalls):.2f} / {max(abuse.stalls):.2f}" if abuse.stalls else "none closed"
    return {
        "responses >= 500 (clients / server), target 0": f"{sum(fives)} / {sum(fives_server)}",
        "refused requests (non-200 responses + hang-ups)": refused,
        "server log lines per refused request, target ≤ 1": round(len(log_lines) / max(1, refused), 4),
        "good requests": len(abuse.latencies),
        "good p50 / p99 latency ms, target p99 ≤ 3 × p50": f"{p50:.1f} / {p99:.1f}",
        "stalled heads closed after s (median / max)": stalls,
        "ready after the run": healthy,
        "client statuses": dict(sorted(abuse.statuses.items())),
        "server statuses": dict(sorted(server.items())),
        "client errors": dict(abuse.errors),
        "log sample": log_lines[:10],
    }


def markdown(r: dict[str, Any]) -> str:
    rows = [f"| {k} | {v} |" for k, v in r.items() if not isinstance(v, (dict, list))]
    counts = [f"| {who} {k} | {v} |" for who in ("client", "server") for k, v in r[f"{who} statuses"].items()]
    return "\n".join(
        [f"serve abuse: {r['model']}, {os.cpu_count()} CPUs", "", "| metric | value |", "|---|---|", *rows, *counts]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, help="An export directory (default: faces-dcgan behind a shift guard).")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--header-timeout-s", type=float, default=10.0, help="The server's --header-timeout-s.")
    ap.add_argument("--threads", type=int, help="ONNX Runtime threads in the server (default: its own).")
    ap.add_argument("--no-token", action="store_true", help="Serve without $UNLEARN_SERVE_TOKEN (no token requests).")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "serve_abuse")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.artifact or build_artifact(Path(tmp) / "art"), args)
    (args.out / "serve_abuse.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_abuse.md").write_text(markdown(result) + "\n")
    print(markdown(result) + f"\n\nwrote {args.out / 'serve_abuse.json'}, serve_abuse.md and serve_abuse.log")


if __name__ == "__main__":
    main()
