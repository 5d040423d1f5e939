"""The service's HTTP protocol (serve/server.py) on a real uvicorn server on a free loopback port.

The server runs in a thread of the test process (the same protocol and app ``unlearn-cli serve``
runs), so the tests read its log records through caplog. Raw sockets, because the faults live
below HTTP clients: half-open connections, half a request head, malformed requests, hang-ups.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from feature_unlearn.serve.http import create_app
from feature_unlearn.serve.server import LogThrottle, ServeProtocol, open_file_warning, uvicorn_options
from tests.helpers import config, free_port

HEADER_TIMEOUT = 0.5
MAX_CONNECTIONS = 8


@contextmanager
def running(app: Any, **overrides: Any) -> Iterator[int]:
    """``app`` behind uvicorn with the service's protocol options, in a thread; yields the port."""
    cfg = config(Path("."), **overrides)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **uvicorn_options(cfg)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def app(artifact: Path) -> Any:
    return create_app(config(artifact))


@pytest.fixture(scope="module")
def port(app: Any) -> Iterator[int]:
    with running(app, header_timeout_s=HEADER_TIMEOUT, max_connections=MAX_CONNECTIONS) as p:
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{p}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.05)
        yield p


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection (a refusal always closes it)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def read_response(s: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (head, then content-length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
    )
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def exchange(port: int, raw: bytes) -> bytes:
    with connect(port) as s:
        s.sendall(raw)
        return read_all(s)


def json_error(reply: bytes) -> tuple[int, dict[str, str]]:
    """(status, the error object); asserts the documented shape and content type."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), reply[:300]
    return int(head[9:12]), json.loads(body)["error"]


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_stalled_request_heads_are_closed_on_time(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    start = time.monotonic()
    silent = connect(port)  # connects, sends nothing (uvicorn held these forever)
    half = connect(port)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    reused = connect(port)  # keep-alive: one request answered, then half of the next one
    reused.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert read_response(reused).startswith(b"HTTP/1.1 200")
    reused.sendall(b"GET /healthz HTTP/1.1\r\n")
    trickle = connect(port)  # slowloris: a byte every 0.1 s never restarts the clock
    closed_at = None
    for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40:
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            closed_at = time.monotonic() - start
            break
        time.sleep(0.1)
    trickled = read_all(trickle)
    assert (closed_at is not None or trickled) and time.monotonic() - start < HEADER_TIMEOUT + 2.5
    assert read_all(silent) == b"" and time.monotonic() - start < HEADER_TIMEOUT + 3
    for s in (half, reused):
        status, err = json_error(read_all(s))
        assert status == 408 and err == {"code": "request_timeout", "message": "no complete request head within 0.5 s"}
    for s in (silent, half, reused, trickle):
        s.close()
    lines = warnings_about(caplog, "no complete request head within 0.5 s")
    assert len(lines) == 4 and all(r.exc_info is None for r in lines), [r.getMessage() for r in lines]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # and it keeps serving


def test_protocol_refusals_are_json(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    status, err = json_error(exchange(port, b"GARBAGE\r\n\r\n"))  # was: text/plain "Invalid HTTP request received."
    assert status == 400 and err["code"] == "bad_request"
    big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    status, err = json_error(exchange(port, big))
    assert status == 431 and err == {
        "code": "headers_too_large",
        "message": "the request line and headers exceed 16384 bytes",
    }
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 2  # at most a line per refusal
    caplog.clear()  # an ignored Upgrade header: served as plain HTTP, and no longer two log lines per request
    upgrade = exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close, Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert upgrade.startswith(b"HTTP/1.1 200") and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    idle = [connect(port) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.1)  # let the server accept them
    reply = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, err = json_error(reply)  # was: no limit at all (and uvicorn's own limit answers text/plain)
    assert status == 503 and err["code"] == "overloaded" and b"retry-after: 1" in reply.lower()
    assert len(warnings_about(caplog, "connections or requests")) == 1
    for s in idle:
        s.close()
    deadline = time.monotonic() + 5
    while httpx.get(f"http://127.0.0.1:{port}/healthz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_hang_up_mid_body_is_one_line_and_a_499(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    with connect(port) as s:
        s.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 20\r\n\r\n{"n":'
        )
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while 'status="499"' not in (metrics := httpx.get(f"http://127.0.0.1:{port}/metrics").text):
        assert time.monotonic() < deadline, "no 499 counted"
        time.sleep(0.05)
    assert 'path="/v1/generate",status="5' not in metrics
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]  # was: two ERRORs with tracebacks
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
    assert "closed the connection after 5 of 20 body bytes" in records[0].getMessage()


def test_unexpected_error_is_json_and_logged_once(
    port: int, app: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("/secret/path exploded")

    monkeypatch.setattr(app.state.service.api, "model_info", broken)
    caplog.clear()
    r = httpx.get(f"http://127.0.0.1:{port}/v1/model")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal" and "secret" not in r.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, [r.getMessage() for r in errors]  # not uvicorn's second


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that fails before responding on /raise and returns without responding elsewhere."""
    if scope.get("path") == "/raise":
        raise RuntimeError("failed before the response")


def test_an_app_that_never_responds_gets_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    with running(bare_app, header_timeout_s=HEADER_TIMEOUT) as port:
        for path, line in (("/raise", "unhandled error on GET /raise"), ("/quiet", "no response to GET /quiet")):
            caplog.clear()
            status, err = json_error(exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()))
            assert status == 500 and err["code"] == "internal"  # was: text/plain "Internal Server Error"
            lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(lines) == 1 and lines[0].getMessage() == line, [r.getMessage() for r in lines]


def test_log_throttle_passes_one_line_per_template_per_interval() -> None:
    now = [0.0]
    throttle = LogThrottle(interval_s=1.0, clock=lambda: now[0])

    def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("serve", level, __file__, 1, msg, ("x",), None)

    assert throttle.filter(record("closed %s")) and throttle.filter(record("other %s"))
    assert not any(throttle.filter(record("closed %s")) for _ in range(5))
    assert throttle.filter(record("info %s", logging.INFO)) and throttle.filter(record("info %s", logging.INFO))
    now[0] = 1.5
    passed = record("closed %s")
    assert throttle.filter(passed) and passed.getMessage() == "closed x [5 more like this in the last 2 s]"
    assert not throttle.filter(record("closed %s"))


def test_protocol_options_survive_pickling_for_workers() -> None:
    options = uvicorn_options(config(Path("."), header_timeout_s=2.5, max_connections=7))
    protocol = pickle.loads(pickle.dumps(options["http"]))  # --workers N spawns processes with the pickled config
    assert protocol.func is ServeProtocol and protocol.keywords == {"header_timeout_s": 2.5, "max_connections": 7}
    assert options["ws"] == "none"


def test_open_file_limit_below_max_connections_is_named() -> None:
    assert open_file_warning(1000, soft_limit=20000) is None
    warning = open_file_warning(1000, soft_limit=1024)
    assert warning is not None and "--max-connections 1000" in warning and "ulimit -n" in warning
