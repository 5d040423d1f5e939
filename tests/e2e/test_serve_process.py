"""The real ``unlearn-cli serve`` process on a free loopback port, and the no-torch guarantee of the runtime and the
serving path (each checked in a fresh interpreter)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from feature_unlearn.serve.runtime import SafeGenerator
from tests.helpers import ROOT, decode_images, free_port, run_isolated

CLI = [sys.executable, "-m", "feature_unlearn.cli"]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready within {timeout} s")


def stalled_body(port: int, token: str) -> bytes:
    """Headers and half a body, then silence: the service answers once its timeout (1 s) passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b'\r\nContent-Length: 20\r\n\r\n{"n":'
        )
        return s.recv(4096)


def raw(port: int, data: bytes, hang_up: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; everything until the server closes it (or nothing, hanging up first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if hang_up:
            time.sleep(0.05)
            return b""
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        return reply


@pytest.mark.slow
def test_cli_serves_on_loopback_without_torch(artifact: Path) -> None:
    port, token = free_port(), "process-test-token"  # given with a newline, as $(cat secret-file) does
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNLEARN_SERVE_TOKEN": token + "\n", "OMP_NUM_THREADS": "1"}
    cmd = [
        *CLI,
        "serve",
        str(artifact),
        "--port",
        str(port),
        "--threads",
        "1",
        "--max-images",
        "8",
        "--timeout-s",
        "1",
        "--header-timeout-s",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # Linux: no torch library is mapped into the serving process
            assert "libtorch" not in maps.read_text()
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/v1/generate", json={"n": 2}).status_code == 401
        r = httpx.post(f"{base}/v1/generate", json={"n": 2, "seed": 4}, headers=auth)
        assert r.status_code == 200 and r.json()["guard_mode"] == "shift"
        want = SafeGenerator.load(artifact, threads=1).generate(n=2, seed=4).images
        np.testing.assert_array_equal(decode_images(r.json()), want)
        bad = httpx.post(f"{base}/v1/generate", json={"n": 9}, headers=auth)
        assert bad.status_code == 422 and "between 1 and 8" in bad.json()["error"]["message"]
        assert "server" not in r.headers  # no version banner
        assert stalled_body(port, token).startswith(b"HTTP/1.1 408")
        assert httpx.head(f"{base}/healthz").status_code == 200 and httpx.head(f"{base}/readyz").status_code == 200
        garbage = raw(port, b"GARBAGE\r\n\r\n")  # uvicorn's own refusal, in the service's JSON shape
        refusal = b'"code": "bad_request", "message": "invalid HTTP/1.1 request (malformed request line or headers)"}}'
        assert garbage.startswith(b"HTTP/1.1 400") and garbage.endswith(refusal)
        started = time.monotonic()
        assert raw(port, b"GET /healthz HTTP/1.1\r\n").startswith(b"HTTP/1.1 408")  # half a head, then silence
        assert 0.9 < time.monotonic() - started < 5
        raw(
            port,
            b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + token.encode()
            + b'\r\nContent-Length: 20\r\n\r\n{"n":',
            hang_up=True,
        )
        deadline = time.monotonic() + 10
        while 'status="499"' not in (metrics := httpx.get(f"{base}/metrics", headers=auth).text):
            assert time.monotonic() < deadline, "the hang-up was not counted"
            time.sleep(0.05)
        # no 5xx anywhere; a /readyz probe that lands while the model still loads is a 503 by design
        ready_503 = 'path="/readyz",status="503"'
        server_errors = [x for x in metrics.splitlines() if 'status="5' in x and ready_503 not in x]
        assert 'status="401"' in metrics and server_errors == [], server_errors
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in err, err[-2000:]
    assert "Traceback" not in err and token not in err + out and "127.0.0.1" in err
    assert err.count("the client closed the connection after 5 of 20 body bytes") == 1, err[-2000:]
    assert err.count("Invalid HTTP request received.") == 1 and err.count("no complete request head within 1 s") == 1


@pytest.mark.slow
def test_workers_run_the_service_protocol(artifact: Path) -> None:
    """--workers 2 pickles the protocol into each worker process: its head timeout must still apply."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "UNLEARN_SERVE_TOKEN"} | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        *CLI,
        "serve",
        str(artifact),
        "--port",
        str(port),
        "--threads",
        "1",
        "--workers",
        "2",
        "--header-timeout-s",
        "0.5",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        for _ in range(4):  # whichever worker accepts it
            started = time.monotonic()
            assert (
                raw(port, b"GET /healthz HTTP/1.1\r\n").startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err[-2000:]


def test_serve_never_imports_torch(artifact: Path) -> None:
    code = (
        "from feature_unlearn import serve\n"
        f"g = serve.SafeGenerator.load({str(artifact)!r})\n"
        "r = g.generate(n=3, seed=0)\n"
        "assert r.images.shape == (3, 32, 32, 1)\n"
    )
    run_isolated(code, ("torch", "feature_unlearn.unlearn", "feature_unlearn.export", "feature_unlearn.cli"))


def test_serving_imports_no_torch(artifact: Path) -> None:
    code = (
        "import feature_unlearn.cli\n"
        "from feature_unlearn.serve import http\n"
        "from fastapi.testclient import TestClient\n"
        "from feature_unlearn.serve.config import ServeConfig\n"
        f"app = http.create_app(ServeConfig({str(artifact)!r}, threads=1))\n"
        "with TestClient(app) as c:\n"
        "    import time\n"
        "    while c.get('/readyz').status_code != 200: time.sleep(0.02)\n"
        "    assert c.post('/v1/generate', json={'n': 2}).status_code == 200\n"
    )
    run_isolated(code, ("torch", "onnx", "feature_unlearn.unlearn.zoo", "feature_unlearn.export.api"))


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["/nowhere/art"], {}, "error: /nowhere/art: not found (give an export directory or a model.onnx file)"),
        (["ART", "--device", "tpu"], {}, "error: --device 'tpu': choose from auto, cpu, cuda, tensorrt"),
        (["ART"], {"UNLEARN_SERVE_TOKEN": ""}, "error: $UNLEARN_SERVE_TOKEN is set but empty"),
    ],
)
def test_cli_refuses_bad_start_in_one_line(artifact: Path, args: list[str], env: dict, message: str) -> None:
    args = [str(artifact) if a == "ART" else a for a in args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run(
        [*CLI, "serve", *args, "--port", "0"], capture_output=True, text=True, env=full_env, timeout=60, cwd=ROOT
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
