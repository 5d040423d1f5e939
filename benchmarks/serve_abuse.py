"""Abuse test of ``unlearn-cli serve``: good clients among hostile ones, on loopback.

    python -m benchmarks.serve_abuse [--artifact DIR] [--seconds 30] [--clients 64] [--no-token] [--out DIR]

The real service (with a random ``$UNLEARN_SERVE_TOKEN`` unless --no-token) gets ``--clients``
concurrent clients for ``--seconds``: half send good requests (``{"n": 4, "seed": k}``, kept-alive),
a quarter bad ones in a tight loop (malformed JSON, unknown fields, latents of ±3.4e38, a wrong or
no token, a 2 MB body, a wrong Content-Type, a line that is not HTTP), an eighth hang up mid-body
and an eighth send half a head and stall until the server closes (``--header-timeout-s``, the
server's). Reported: status counts (the clients' and the server's /metrics), server log lines per
refusal, good requests' latency. Targets: no response >= 500, <= 1 log line per refusal,
p99 <= 3 x p50, ready afterwards. The server, the good clients and the command line are
serve_load.py's; ``--threads 0``: the server's own ONNX Runtime threads.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.serve_load import HOST, Server, cli, exchange, generate, p50_p99_ms, request, table


@dataclass(frozen=True)
class AbuseOptions:
    seconds: float = 30.0
    clients: int = 64
    header_timeout_s: float = 10.0
    threads: int = 0
    no_token: bool = False


@dataclass
class Abuse:
    port: int
    token: Optional[str]
    z_dim: int
    deadline: float  # time.perf_counter()
    header_timeout_s: float
    statuses: Counter[str] = field(default_factory=Counter)  # "kind status" -> count, as the clients saw them
    done: list[tuple[float, float]] = field(default_factory=list)  # good requests' (start, end)
    hangups: int = 0  # bodies abandoned mid-way (the server should count a 499 each)
    stalls: list[float] = field(default_factory=list)  # seconds until the server closed a stalled head
    errors: Counter[str] = field(default_factory=Counter)

    def headers(self, good_token: bool = True, kind: str = "application/json") -> dict[str, str]:
        token = {} if self.token is None else {"Authorization": f"Bearer {'' if good_token else 'wrong-'}{self.token}"}
        return {"Content-Type": kind, **token}

    async def good(self, seed: int) -> None:
        statuses, errors = await generate(self.port, 4, seed, 1000, self.deadline, self.headers(), self.done)
        self.statuses.update({f"good {k}": n for k, n in statuses.items()})
        self.errors.update(f"good {e[:80]}" for e in errors if not e[:3].isdigit())

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
        while time.perf_counter() < self.deadline:
            kind, raw = bad[k % len(bad)]
            k += 1
            try:
                self.statuses[f"{kind} {(await exchange(self.port, raw))[0]}"] += 1
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors[f"{kind} {type(exc).__name__}"] += 1

    async def hang_up(self, k: int) -> None:
        """Half a body, then the connection closes (with and without a valid token, in turn)."""
        while time.perf_counter() < self.deadline:
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
        while time.perf_counter() < self.deadline:
            reader, writer = await asyncio.open_connection(HOST, self.port)
            started = time.perf_counter()
            writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            try:
                reply = await asyncio.wait_for(reader.read(), self.header_timeout_s + 10)
                self.stalls.append(time.perf_counter() - started)
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


def measure(artifact: Path, o: AbuseOptions, log: Path) -> dict[str, Any]:
    token = None if o.no_token else secrets.token_hex(16)
    options = ["--header-timeout-s", str(o.header_timeout_s), *(["--threads", str(o.threads)] if o.threads else [])]
    with Server(artifact, log, *options, token=token) as server:
        model = json.loads(server.get("/v1/model")[1])
        lines_before, server_before = len(log.read_text().splitlines()), server_statuses(server)
        abuse = Abuse(server.port, token, int(model["z_dim"]), time.perf_counter() + o.seconds, o.header_timeout_s)
        started = time.perf_counter()
        asyncio.run(asyncio.wait_for(abuse.run(o.clients), o.seconds + o.header_timeout_s + 30))
        elapsed = round(time.perf_counter() - started, 1)
        log_lines = log.read_text().splitlines()[lines_before:]
        statuses = server_statuses(server) - server_before  # the run's only (not the start's readiness 503s)
        healthy = server.get("/readyz")[0] == 200
    fives = [n for k, n in abuse.statuses.items() if k[-3:].isdigit() and int(k[-3:]) >= 500]
    fives_server = [n for k, n in statuses.items() if int(k[-3:]) >= 500]
    refused = sum(n for k, n in abuse.statuses.items() if not k.endswith(" 200")) + abuse.hangups  # stalls: 408s
    p50, p99 = p50_p99_ms([e - s for s, e in abuse.done])
    stalls = f"{statistics.median(abuse.stalls):.2f} / {max(abuse.stalls):.2f}" if abuse.stalls else "none closed"
    return {
        "model": model.get("name"),
        "seconds": elapsed,
        "responses >= 500 (clients / server), target 0": f"{sum(fives)} / {sum(fives_server)}",
        "refused requests (non-200 responses + hang-ups)": refused,
        "server log lines per refused request, target ≤ 1": round(len(log_lines) / max(1, refused), 4),
        "good requests": len(abuse.done),
        "good p50 / p99 latency ms, target p99 ≤ 3 × p50": f"{p50:.1f} / {p99:.1f}",
        "stalled heads closed after s (median / max)": stalls,
        "ready after the run": healthy,
        "client statuses": dict(sorted(abuse.statuses.items())),
        "server statuses": dict(sorted(statuses.items())),
        "client errors": dict(abuse.errors),
        "log sample": log_lines[:10],
    }


def markdown(r: dict[str, Any]) -> str:
    rows = [(k, v) for k, v in r.items() if not isinstance(v, (dict, list))]
    rows += [(f"{who} {k}", v) for who in ("client", "server") for k, v in r[f"{who} statuses"].items()]
    return table(f"serve abuse: {r['model']}", rows)


if __name__ == "__main__":
    cli("serve_abuse", __doc__, AbuseOptions, measure, markdown)
