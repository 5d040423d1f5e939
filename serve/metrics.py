"""Prometheus metrics (prometheus-client) in a registry per app, and the ASGI middleware that counts requests.

With ``--workers N`` each worker keeps its own registry: a scrape sees the worker that answers it.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PATHS = frozenset({"/v1/generate", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "unlearn_serve_requests", "HTTP requests by path and status.", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "unlearn_serve_request_seconds", "HTTP request latency.", ["path"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch = Histogram(
            "unlearn_serve_batch_images", "Images per model call (dynamic batches).", buckets=BATCH_BUCKETS, registry=r
        )
        self.images = Counter("unlearn_serve_images", "Images generated.", registry=r)
        self.flagged = Counter(
            "unlearn_serve_flagged_images", "Generated images whose latent the guard flagged.", registry=r
        )
        self.queue_depth = Gauge("unlearn_serve_queue_depth", "Requests waiting for the model.", registry=r)
        self.ready = Gauge("unlearn_serve_ready", "1 once the model is loaded and warmed.", registry=r)

    def observe(self, path: str, status: int, seconds: float) -> None:
        label = path if path in PATHS else "other"  # unknown paths share one label: bounded cardinality
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request and counts it by its response status (500 if none was sent)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - start)
