"""The HTTP API in process (TestClient / httpx ASGI): results, batching, guard, bad input, auth, metrics, limits."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from feature_unlearn.export import ExportConfig, export_model
from feature_unlearn.serve.api import GeneratorAPI, Latents
from feature_unlearn.serve.batching import Outputs
from feature_unlearn.serve.config import ServeConfig
from feature_unlearn.serve.errors import ServeError
from feature_unlearn.serve.http import create_app
from feature_unlearn.serve.policy import RowSource
from feature_unlearn.serve.runtime import LATENT_BOUND, SafeGenerator
from tests.helpers import JSON, config, decode_images, guard_entry, make_generator, png_array, save_run, wait_ready

Z = 8  # the test artifact's z_dim


@pytest.fixture(scope="module")
def gen(artifact: Path) -> SafeGenerator:
    return SafeGenerator.load(artifact, threads=1)


@pytest.fixture(scope="module")
def client(artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(config(artifact))) as c:
        wait_ready(c)
        yield c


def post(client: TestClient, body: Any, **headers: str) -> httpx.Response:
    return client.post("/v1/generate", content=json.dumps(body), headers={**JSON, **headers})


def test_generate_matches_the_runtime_and_seeds_repeat(client: TestClient, gen: SafeGenerator) -> None:
    r = post(client, {"n": 3, "seed": 5})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"images", "flagged", "score", "guard_mode"} and body["guard_mode"] == "shift"
    expected = gen.generate(n=3, seed=5)
    np.testing.assert_array_equal(decode_images(body), expected.images)
    assert body["flagged"] == expected.flagged.tolist()
    np.testing.assert_allclose(body["score"], expected.scores, rtol=1e-6)
    assert post(client, {"n": 3, "seed": 5}).json()["images"] == body["images"]
    assert post(client, {"n": 3, "seed": 6}).json()["images"] != body["images"]
    assert len(post(client, {"n": 2}).json()["images"]) == 2  # unseeded


def test_latents_go_through_the_guard(client: TestClient, gen: SafeGenerator) -> None:
    u, t = np.array(gen.guard["direction"][0], np.float32), gen.guard["threshold"][0]
    z = np.stack([u * (t + 2.0), u * (t - 2.0)]).astype(np.float32)
    body = post(client, {"latents": z.tolist()}).json()
    assert body["flagged"] == [True, False] and body["guard_mode"] == "shift"
    np.testing.assert_allclose(body["score"], [t + 2.0, t - 2.0], atol=1e-5)
    np.testing.assert_array_equal(decode_images(body), gen.generate(z=z).images)
    onto = gen.generate(z=np.stack([u * t, u * (t - 2.0)]).astype(np.float32)).images  # shift moved z[0] onto t
    assert np.abs(decode_images(body)[0].astype(int) - onto[0].astype(int)).max() <= 1


def test_png_on_request(client: TestClient, gen: SafeGenerator) -> None:
    r = post(client, {"n": 1, "seed": 9}, Accept="image/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = gen.generate(n=1, seed=9)
    np.testing.assert_array_equal(png_array(r.content), out.images[0])
    assert r.headers["x-flagged"] == str(bool(out.flagged[0])).lower() and r.headers["x-guard-mode"] == "shift"
    assert float(r.headers["x-score"]) == pytest.approx(float(out.scores[0]), rel=1e-6)
    many = post(client, {"n": 2}, Accept="image/png")
    assert many.status_code == 406 and "one image" in many.json()["error"]["message"]
    assert (
        post(client, {"n": 1}, Accept="image/png;q=0.5, application/json").headers["content-type"] == "application/json"
    )
    refused = post(client, {"n": 1}, Accept="text/html")
    assert refused.status_code == 406 and "application/json, image/png or application/x-npy" in refused.text


@pytest.mark.parametrize(
    "accept", ["application/x-npy", "application/octet-stream", "application/json;q=0.2, application/x-npy"]
)
def test_arrays_on_request_skip_png(client: TestClient, gen: SafeGenerator, accept: str) -> None:
    r = post(client, {"n": 5, "seed": 11}, Accept=accept)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    images = np.load(io.BytesIO(r.content), allow_pickle=False)
    out = gen.generate(n=5, seed=11)
    np.testing.assert_array_equal(images, out.images)  # uint8 [N, H, W, C], exactly the runtime's
    assert r.headers["x-shape"] == ",".join(map(str, out.images.shape)) and r.headers["x-guard-mode"] == "shift"
    assert [f == "1" for f in r.headers["x-flagged"].split(",")] == out.flagged.tolist()
    np.testing.assert_allclose([float(s) for s in r.headers["x-score"].split(",")], out.scores, rtol=1e-6)


def test_one_batch_serves_png_and_array_requests_together(artifact: Path) -> None:
    api = GeneratorAPI(config(artifact))
    api.setup("cpu")
    want = [Latents(2, seed=1), Latents(3, seed=2, fmt="npy"), Latents(1, seed=3, fmt="png")]
    files = api.run_batch(want)[0]
    assert [type(f).__name__ for f in files] == ["bytes", "bytes", "ndarray", "ndarray", "ndarray", "bytes"]
    np.testing.assert_array_equal(np.stack(files[2:5]), api.model.generate(n=3, seed=2).images)
    np.testing.assert_array_equal(png_array(files[5]), api.model.generate(n=1, seed=3).images[0])


def test_latents_up_to_the_bound_are_served_beyond_it_refused(client: TestClient, gen: SafeGenerator) -> None:
    edge = np.where(np.arange(Z) % 2, LATENT_BOUND, -LATENT_BOUND).astype(np.float32)[None]  # |z_i| == bound: allowed
    r = post(client, {"latents": edge.tolist()}, Accept="image/png")
    assert r.status_code == 200 and np.isfinite(float(r.headers["x-score"]))
    assert float(r.headers["x-score"]) == pytest.approx(float(gen.generate(z=edge).scores[0]), rel=1e-5)
    for accept in ("image/png", "application/json"):  # ±3.4e38 once overflowed p(z): a 500, or X-Score: inf
        huge = post(client, {"latents": [[3.4e38] * Z]}, Accept=accept)
        assert huge.status_code == 422 and huge.headers["content-type"] == "application/json", huge.text
        assert huge.json()["error"]["code"] == "invalid_latents" and "|z_i| <= 10000" in huge.json()["error"]["message"]


BAD_INPUT = [
    ({"n": 0}, 422, "invalid_n", "n = 0: must be between 1 and 16"),
    ({"n": -3}, 422, "invalid_n", "n = -3: must be between 1 and 16"),
    ({"n": 17}, 422, "invalid_n", "n = 17: must be between 1 and 16"),
    ({"n": 2.5}, 422, "invalid_n", "n: Input should be a valid integer, got 2.5"),
    ({"n": "4"}, 422, "invalid_n", "n: Input should be a valid integer, got '4'"),
    ({"n": True}, 422, "invalid_n", "n: Input should be a valid integer"),
    ({"n": None}, 422, "invalid_body", "give n (and optionally seed) or latents"),
    ({}, 422, "invalid_body", "give n (and optionally seed) or latents"),
    ({"n": 2, "seed": -1}, 422, "invalid_seed", "seed: Input should be greater than or equal to 0"),
    ({"n": 2, "seed": 1.5}, 422, "invalid_seed", "seed: Input should be a valid integer"),
    ({"latents": [[0.0] * (Z + 1)]}, 422, "invalid_latents", "latents row 0 has 9 numbers; this model's z_dim is 8"),
    ({"latents": [[0.0] * Z, [0.0] * 3]}, 422, "invalid_latents", "latents row 1 has 3 numbers"),
    ({"latents": []}, 422, "invalid_latents", "latents is empty"),
    ({"latents": [[]]}, 422, "invalid_latents", "latents row 0 has 0 numbers"),
    ({"latents": "zeros"}, 422, "invalid_latents", "latents: Input should be a valid list"),
    ({"latents": [0.0] * Z}, 422, "invalid_latents", "latents.0: Input should be a valid list"),
    ({"latents": [[0.0] * (Z - 1) + ["1"]]}, 422, "invalid_latents", "latents.0.7: Input should be a valid number"),
    ({"latents": [[0.0] * Z] * 17}, 422, "invalid_latents", "latents rows = 17: must be between 1 and 16"),
    ({"latents": [[1e39] + [0.0] * (Z - 1)]}, 422, "invalid_latents", "beyond float32 range in 1 of 1 rows"),
    (
        {"latents": [[3.4e38] * Z]},
        422,
        "invalid_latents",
        "latents exceed the bound |z_i| <= 10000 in 1 of 1 rows (first: row 0)",
    ),
    (
        {"latents": [[0.0] * Z, [0.0] * (Z - 1) + [-3.4e38]]},
        422,
        "invalid_latents",
        "exceed the bound |z_i| <= 10000 in 1 of 2 rows (first: row 1)",
    ),
    ({"latents": [[LATENT_BOUND * 1.01] + [0.0] * (Z - 1)]}, 422, "invalid_latents", "exceed the bound"),
    ({"latents": [[0.0] * Z], "n": 1}, 422, "invalid_body", "not both"),
    ({"latents": [[0.0] * Z], "seed": 1}, 422, "invalid_body", "not both"),
    ({"n": 1, "guard": "off"}, 422, "unknown_field", "unknown field 'guard'"),
    ({"n": 1, "guard_mode": "off"}, 422, "unknown_field", "the guard mode is fixed by the model artifact"),
    ({"n": 1, "threshold": 99.0}, 422, "unknown_field", "unknown field 'threshold'"),
    ([1, 2], 422, "invalid_body", "must be a JSON object"),
    ("n=4", 422, "invalid_body", "got a JSON string"),
    (None, 422, "invalid_body", "got a JSON null"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), BAD_INPUT, ids=[c[3][:40] for c in BAD_INPUT])
def test_bad_input_is_a_clear_4xx(client: TestClient, body: Any, status: int, code: str, message: str) -> None:
    r = post(client, body)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == code and message in err["message"], err
    assert post(client, {"n": 1, "seed": 0}).status_code == 200  # and it keeps serving


RAW_BAD_INPUT = [
    (
        b'{"latents": [[NaN, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]}',
        JSON,
        422,
        "NaN, infinity or a value beyond float32 range in 1 of 2 rows (first: row 0)",
    ),
    (b'{"latents": [[0, 0, 0, 0, 0, 0, 0, -Infinity]]}', JSON, 422, "NaN, infinity"),
    (b'{"latents": [[0, 0, 0, 0, 0, 0, 0, 1e999]]}', JSON, 422, "NaN, infinity"),
    (b'{"n": 4,', JSON, 400, "malformed JSON: Expecting property name enclosed in double quotes (line 1, column 9)"),
    (b"{'n': 4}", JSON, 400, "malformed JSON"),
    (b"", JSON, 400, "the body is empty"),
    (b'{"n": \xff}', JSON, 400, "not UTF-8"),
    (b"[" * 100_000, JSON, 413, "the limit is 8192"),
    (b"[" * 3000 + b"]" * 3000, JSON, 400, "nested too deeply"),
    (b'{"n": 4}', {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json, got 'text/plain'"),
    (b'{"n": 4}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type must be application/json"),
    (b'{"n": 4}', {}, 415, "got none"),
    (b'{"n": 4, "seed": ' + b"1" * 8000 + b"}", JSON, 400, "a number too long"),
]


@pytest.mark.parametrize(("raw", "headers", "status", "message"), RAW_BAD_INPUT, ids=[c[3][:40] for c in RAW_BAD_INPUT])
def test_bad_bytes_are_a_clear_4xx(client: TestClient, raw: bytes, headers: dict, status: int, message: str) -> None:
    r = client.post("/v1/generate", content=raw, headers=headers)
    assert r.status_code == status and message in r.json()["error"]["message"], r.text
    assert "Traceback" not in r.text and post(client, {"n": 1}).status_code == 200


def test_oversized_streamed_body_and_query_fields(client: TestClient) -> None:
    chunks = (b" " * 1024 for _ in range(20))  # chunked: no Content-Length to refuse up front
    r = client.post("/v1/generate", content=chunks, headers=JSON)
    assert r.status_code == 413 and "exceeds the limit of 8192 bytes" in r.json()["error"]["message"]
    r = client.post("/v1/generate?guard=off", content=b'{"n": 1}', headers=JSON)
    assert r.status_code == 422 and "unknown query parameter(s) guard" in r.json()["error"]["message"]
    assert client.get("/v1/generate").status_code == 405 and client.get("/nope").json()["error"]["code"] == "not_found"


def asgi_post(client: TestClient, chunks: list[bytes], declared: int) -> list[dict[str, Any]]:
    """POST /v1/generate straight into the app: ``chunks`` of a ``declared``-byte body, then the client hangs up."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/generate",
        "raw_path": b"/v1/generate",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(declared).encode())],
        "client": ("127.0.0.9", 4321),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr]
    return sent


def test_client_disconnect_is_a_499_and_one_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, errors = 'unlearn_serve_requests_total{path="/v1/generate",status="499"}', 'status="5'
    before = client.get("/metrics").text
    caplog.clear()
    sent = asgi_post(client, [b'{"n": ', b"4"], declared=20)
    assert sent[0]["status"] == 499, sent  # was: a 500, and two tracebacks in the log
    err = json.loads(sent[1]["body"])["error"]
    assert err == {
        "code": "client_closed_request",
        "message": "the client closed the connection after 7 of 20 body bytes",
    }
    records = [r for r in caplog.records if r.name.startswith(("serve", "uvicorn"))]
    assert len(records) == 1 and records[0].levelno == logging.WARNING and records[0].exc_info is None, records
    assert records[0].getMessage() == "POST /v1/generate from 127.0.0.9:4321: " + err["message"]
    after = client.get("/metrics").text
    assert _metric(after, key) == _metric(before, key) + 1 and after.count(errors) == before.count(errors)

    def hung_up() -> dict[str, Any]:
        raise ClientDisconnect()

    monkeypatch.setattr(client.app.state.service.api, "model_info", hung_up)  # type: ignore[attr-defined]
    r = client.get("/v1/model")  # a disconnect noticed anywhere else is the same 499, not a 500
    assert r.status_code == 499 and r.json()["error"]["code"] == "client_closed_request"


def test_health_routes_answer_head(client: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        r = client.head(path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json" and r.content == b"", path
    assert client.head("/v1/model").status_code == 405  # only the probes
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/healthz"]) == {"get"} and set(paths["/readyz"]) == {"get"}


def test_token_loses_surrounding_whitespace(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_SERVE_TOKEN", "  s3cret-token\n")  # as $(cat secret-file) or a mounted secret gives it
    assert config(artifact).read_token() == "s3cret-token"
    with TestClient(create_app(config(artifact))) as c:
        wait_ready(c)
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200  # was: 401
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret-toke"}).status_code == 401
    monkeypatch.setenv("UNLEARN_SERVE_TOKEN", "\t\r\n")
    with pytest.raises(ServeError, match=r"\$UNLEARN_SERVE_TOKEN is set but empty"):
        config(artifact).read_token()


@pytest.mark.slow
def test_model_lists_each_feature_once(tmp_path: Path) -> None:
    guard = {**guard_entry(k=3), "features": ["eyeglasses", "eyeglasses", "hat"]}  # one name per guard row
    export_model(
        ExportConfig(source=str(save_run(tmp_path / "run", make_generator("dcgan"), guard)), out=tmp_path / "art")
    )
    cfg = config(tmp_path / "art")
    api = GeneratorAPI(cfg)
    api.setup("cpu")
    with TestClient(create_app(cfg, api)) as c:
        info = c.get("/v1/model").json()
    assert info["features"] == ["eyeglasses", "hat"] and info["feature"] == "eyeglasses,hat", info


def test_distinct_seeds_never_cross_in_merged_batches(artifact: Path, gen: SafeGenerator) -> None:
    app = create_app(config(artifact, max_batch=16, max_delay_ms=100.0))
    jobs = [{"n": 1 + s % 4, "seed": 100 + s} for s in range(20)] + [{"latents": [[s / 10] * Z]} for s in range(4)]

    async def main() -> tuple[list[httpx.Response], str]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.02)
                replies = await asyncio.gather(*(c.post("/v1/generate", json=j) for j in jobs))
                return list(replies), (await c.get("/metrics")).text

    replies, metrics = asyncio.run(main())
    for job, r in zip(jobs, replies, strict=True):
        assert r.status_code == 200, r.text
        want = (
            gen.generate(n=job["n"], seed=job["seed"])
            if "n" in job
            else gen.generate(z=np.array(job["latents"], np.float32))
        )
        np.testing.assert_array_equal(decode_images(r.json()), want.images)
        assert r.json()["flagged"] == want.flagged.tolist()
    images = sum(j.get("n", 1) for j in jobs)
    batches = _metric(metrics, "unlearn_serve_batch_images_count")  # warm-up runs bypass the batcher
    assert _metric(metrics, "unlearn_serve_batch_images_sum") == images
    assert batches <= -(-images // 16) + 1, (
        f"{batches} model calls for {len(jobs)} requests ({images} images): not merged"
    )


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def test_metrics_model_health_and_docs(client: TestClient) -> None:
    flagged = sum(sum(post(client, {"n": 16, "seed": s}).json()["flagged"]) for s in range(3))
    before = client.get("/metrics").text
    post(client, {"n": 0})
    text = client.get("/metrics").text
    refused = 'unlearn_serve_requests_total{path="/v1/generate",status="422"}'
    assert refused in text
    assert _metric(text, refused) == 1 + _metric(before, refused)
    assert _metric(text, "unlearn_serve_flagged_images_total") >= flagged > 0
    for name in (
        "unlearn_serve_request_seconds_bucket",
        "unlearn_serve_batch_images_bucket",
        "unlearn_serve_queue_depth",
        "unlearn_serve_images_total",
    ):
        assert name in text
    info = client.get("/v1/model").json()
    assert info["image"].pop("png_zlib_level") in (0, 1)  # chosen at warm-up by how well its images compress
    assert info["z_dim"] == Z and info["image"] == {"height": 32, "width": 32, "channels": 1, "format": "png"}
    assert info["guard"]["mode"] == "shift" and info["guard"]["threshold"] == [pytest.approx(0.4)]
    assert info["feature"] == "f0" and info["base_model"] == "mnist-dcgan" and info["limits"]["max_images"] == 16
    assert "direction" not in json.dumps(info) and "/" not in json.dumps(info["name"])
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").json()["status"] == "ready"
    schema = client.get("/openapi.json").json()["paths"]["/v1/generate"]["post"]
    assert set(schema["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"n", "seed", "latents"}
    assert client.get("/docs").status_code == 200


def test_bearer_token(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-token-value"
    monkeypatch.setenv("UNLEARN_SERVE_TOKEN", secret)
    with TestClient(create_app(config(artifact))) as c:
        wait_ready(c)
        replies = [
            post(c, {"n": 1}),
            post(c, {"n": 1}, Authorization="Bearer wrong"),
            post(c, {"n": 1}, Authorization=secret),
            c.get("/v1/model"),
            c.get("/metrics"),
        ]
        for r in replies:
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and secret not in r.text
        auth = {"Authorization": f"Bearer {secret}"}
        assert post(c, {"n": 1}, **auth).status_code == 200 and c.get("/metrics", headers=auth).status_code == 200
        assert secret not in post(c, {"n": 0}, **auth).text and c.get("/healthz").status_code == 200
    monkeypatch.setenv("UNLEARN_SERVE_TOKEN", " ")
    with pytest.raises(ServeError, match=r"\$UNLEARN_SERVE_TOKEN is set but empty"):
        create_app(config(artifact))


class FlakyAPI(GeneratorAPI):
    """Slow on the first request, failing on the second, then fine."""

    calls = 0

    def predict(self, z: np.ndarray, sources: list[Optional[RowSource]]) -> Outputs:
        if len(z) == 3:
            FlakyAPI.calls += 1
            if FlakyAPI.calls == 1:
                time.sleep(0.5)
            elif FlakyAPI.calls == 2:
                raise RuntimeError("/secret/path/model.onnx exploded")
        return super().predict(z, sources)


def test_timeout_and_model_failure_keep_serving(artifact: Path) -> None:
    cfg = config(artifact, timeout_s=0.2)
    with TestClient(create_app(cfg, FlakyAPI(cfg))) as c:
        wait_ready(c)
        slow = post(c, {"n": 3})
        assert slow.status_code == 504  # the error object is exactly the code and the documented message
        message = "no result within 0.2 s; retry later or ask for fewer images"
        assert slow.json()["error"] == {"code": "timeout", "message": message}
        time.sleep(0.4)
        broken = post(c, {"n": 3})
        assert broken.status_code == 500 and broken.json()["error"]["code"] == "internal"
        assert "secret" not in broken.text and "Traceback" not in broken.text
        assert post(c, {"n": 3}).status_code == 200


def test_not_ready_and_bad_config(tmp_path: Path) -> None:
    with TestClient(create_app(config(tmp_path))) as c:  # no model.onnx there
        deadline = time.monotonic() + 10
        while "failed to load" not in c.get("/readyz").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.get("/readyz")
        assert r.status_code == 503 and "not found" in r.json()["error"]["message"]
        assert post(c, {"n": 1}).status_code == 503 and c.get("/healthz").status_code == 200
        assert c.head("/readyz").status_code == 503 and c.head("/healthz").status_code == 200
    for kwargs, message in [
        ({"port": 70000}, "--port"),
        ({"max_batch": 0}, "--max-batch 0"),
        ({"max_queue": 8, "max_images": 16}, "--max-queue 8 is below"),
        ({"device": "tpu"}, "--device 'tpu'"),
        ({"timeout_s": 0}, "--timeout-s"),
        ({"threads": 0}, "--threads"),
        ({"header_timeout_s": 0}, "--header-timeout-s 0"),
        ({"header_timeout_s": float("nan")}, "--header-timeout-s nan"),
        ({"max_connections": 0}, "--max-connections 0"),
    ]:
        with pytest.raises(ServeError, match=message):
            ServeConfig(artifact=tmp_path, **kwargs)
    cfg = config(tmp_path, port=9)
    assert (
        ServeConfig.from_json(cfg.to_json()) == cfg
        and cfg.loopback
        and not ServeConfig(tmp_path, host="0.0.0.0").loopback
    )
    assert cfg.ort_threads == 1 and ServeConfig(tmp_path).ort_threads == (os.cpu_count() or 1)
