"""One serving process: the API hooks, the dynamic batcher, readiness and the metrics they feed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi.responses import Response
from starlette.requests import Request

from feature_unlearn.serve.api import GeneratorAPI
from feature_unlearn.serve.batching import BatchStats, DynamicBatcher
from feature_unlearn.serve.config import ServeConfig
from feature_unlearn.serve.errors import ApiError, ServeError
from feature_unlearn.serve.metrics import Metrics
from feature_unlearn.serve.protocol import read_json, response_format

log = logging.getLogger("serve")


class Service:
    def __init__(self, config: ServeConfig, api: GeneratorAPI, metrics: Metrics) -> None:
        self.config, self.api, self.metrics = config, api, metrics
        stats = BatchStats(on_batch=metrics.batch.observe, on_depth=metrics.queue_depth.set)
        self.batcher = DynamicBatcher(
            api.run_batch, config.max_batch, config.max_delay_ms / 1000, config.max_queue, stats
        )
        self.ready = False
        self.failure: Optional[str] = None

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Accept connections at once (GET /healthz); load and warm in the background (GET /readyz)."""
        self.batcher.start()
        prepare = asyncio.create_task(self._prepare())
        try:
            yield
        finally:
            prepare.cancel()
            await asyncio.gather(prepare, return_exceptions=True)
            self.ready = False
            await self.batcher.stop()

    async def _prepare(self) -> None:
        try:
            if self.api.gen is None:
                await asyncio.to_thread(self.api.setup, self.config.device)
            await asyncio.to_thread(self.api.warm)
        except ServeError as exc:
            self.failure = f"the model failed to load: {exc}"
            log.error(self.failure)
            return
        except Exception:  # a bug or a broken device: the log has it, callers get a fixed line
            self.failure = "the model failed to warm up (see the server log)"
            log.exception(self.failure)
            return
        self.ready = True
        self.metrics.ready.set(1)
        assert self.api.gen is not None
        log.info(
            "ready: %s on %s, guard %s", self.api.gen.manifest.get("name"), self.api.gen.provider, self.api.guard_mode
        )

    def check_ready(self) -> None:
        if not self.ready:
            message = self.failure or "the model is loading and warming up; poll GET /readyz"
            raise ApiError(503, "not_ready", message, {"Retry-After": "1"})

    async def generate(self, request: Request) -> Response:
        self.check_ready()
        if request.query_params:
            names = ", ".join(sorted(request.query_params.keys()))[:80]
            raise ApiError(
                422, "unknown_field", f"unknown query parameter(s) {names}: send n, seed or latents in the JSON body"
            )
        fmt = response_format(request.headers.get("accept"))
        try:  # a client that stalls mid-body must not hold the request forever
            body = await asyncio.wait_for(read_json(request, self.config.max_body_bytes), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                408, "timeout", f"the request body did not arrive within {self.config.timeout_s:g} s"
            ) from None
        latents = dataclasses.replace(self.api.decode_request(body), fmt=fmt)
        if fmt == "png" and len(latents) != 1:
            raise ApiError(
                406,
                "not_acceptable",
                f"Accept: image/png returns one image; this request asks for {len(latents)} "
                "(ask for application/json or application/x-npy to get several)",
            )
        try:
            outputs = await asyncio.wait_for(self.batcher.submit(latents), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                504, "timeout", f"no result within {self.config.timeout_s:g} s; retry later or ask for fewer images"
            ) from None
        except ApiError:
            raise
        except Exception:  # the batcher logged it with its traceback; the caller gets a fixed line
            raise ApiError(500, "internal", "the model failed on this batch (the server log has the details)") from None
        flagged = outputs[1]
        self.metrics.images.inc(len(flagged))
        self.metrics.flagged.inc(int(flagged.sum()))
        return self.api.encode_response(outputs, fmt)
