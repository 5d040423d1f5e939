"""The HTTP service: FastAPI on uvicorn over the torch-free runtime.

    unlearn-cli serve exported/ --port 8000          # or: run_server(ServeConfig("exported/"))
    curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' -d '{"n": 4, "seed": 0}'

Routes: POST /v1/generate, GET /v1/model, GET/HEAD /healthz and /readyz, GET /metrics, and FastAPI's /docs.
With ``$UNLEARN_SERVE_TOKEN`` set, /v1/* and /metrics need ``Authorization: Bearer <token>``.
Every refusal is ``{"error": {"code", "message"}}`` with a 4xx/5xx status, never a traceback, and
at most one log line (serve/server.py does the same for the refusals uvicorn itself makes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from feature_unlearn.serve.api import GenerateRequest, GenerateResponse, GeneratorAPI
from feature_unlearn.serve.config import CONFIG_ENV, ServeConfig
from feature_unlearn.serve.errors import ApiError, ServeError
from feature_unlearn.serve.metrics import Metrics, MetricsMiddleware
from feature_unlearn.serve.protocol import CLIENT_CLOSED, check_bearer, client_closed
from feature_unlearn.serve.server import install_log_throttle, open_file_warning, uvicorn_options
from feature_unlearn.serve.service import Service

log = logging.getLogger("serve")
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
    },
}
GENERATE_DOCS: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
        }
    },
    "responses": {
        200: {
            "model": GenerateResponse,
            "content": {"image/png": {}, "application/x-npy": {}},
            "description": "JSON (base64 PNGs), one raw PNG with Accept: image/png, or every image as one uint8 "
            "[N, H, W, C] .npy array with Accept: application/x-npy (X-Shape, X-Flagged, X-Score headers).",
        },
        **{
            code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code, text in (
                (400, "Malformed JSON."),
                (401, "Missing or wrong bearer token."),
                (403, "Latents sent to a seeds-only service (--latents deny)."),
                (406, "Accept cannot be met."),
                (408, "Body too slow."),
                (413, "Body too large."),
                (415, "Not application/json."),
                (422, "Invalid n, seed or latents."),
                (503, "Not ready or overloaded."),
                (504, "Timed out."),
            )
        },
    },
}


def create_app(config: ServeConfig, api: Optional[GeneratorAPI] = None) -> FastAPI:
    """The app; ``api`` may be set up already (the CLI loads the artifact first to fail fast)."""
    token = config.read_token()
    metrics = Metrics()
    service = Service(config, api or GeneratorAPI(config), metrics)
    app = FastAPI(
        title="feature-unlearn generator",
        version="1",
        lifespan=service.lifespan,
        description="A generator with a feature removed; the latent guard is inside the model.",
    )
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _error_handlers(app)
    _routes(app, service, metrics, token.encode("utf-8") if token else None)
    return app


def _routes(app: FastAPI, service: Service, metrics: Metrics, token: Optional[bytes]) -> None:
    def auth(request: Request) -> None:  # a plain call, not Depends: no dependency solving per request
        check_bearer(request.headers.get("authorization"), token)

    @app.post("/v1/generate", summary="Generate images", **GENERATE_DOCS)
    async def generate(request: Request) -> Response:
        auth(request)
        return await service.generate(request)

    @app.get("/v1/model", summary="The artifact's manifest (public part)")
    async def model(request: Request) -> dict[str, Any]:
        auth(request)
        return service.api.model_info()

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed")
    async def readyz() -> dict[str, str]:
        service.check_ready()
        return {"status": "ready", "guard_mode": service.api.guard_mode, "provider": service.api.model.provider}

    # Load balancers probe with HEAD; FastAPI (unlike Starlette) does not add it to GET routes.
    # Separate routes, out of the schema, so /openapi.json keeps one operation per path.
    for path, probe in (("/healthz", healthz), ("/readyz", readyz)):
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus(request: Request) -> Response:
        auth(request)
        return Response(metrics.render(), media_type=metrics.content_type)


def _error_handlers(app: FastAPI) -> None:
    def reply(status: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status == CLIENT_CLOSED:  # one line, no traceback: nobody reads the reply, the metrics count it
            client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
            log.warning("%s %s from %s: %s", request.method, request.url.path[:100], client, exc.message)
        return reply(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ClientDisconnect)  # a disconnect noticed outside read_json
    async def disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return await api_error(request, client_closed("before the response"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return reply(exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path[:100]}", exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return reply(422, "invalid_request", f"{'.'.join(map(str, first['loc']))}: {first['msg']}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return reply(500, "internal", "internal error (the server log has the details)")


def _log_setup() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    install_log_throttle()


def app_from_env() -> FastAPI:
    """uvicorn's factory for ``--workers N``: each worker reads the settings from $UNLEARN_SERVE_CONFIG."""
    _log_setup()
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ServeError(f"${CONFIG_ENV} is not set; start the service with unlearn-cli serve")
    return create_app(ServeConfig.from_json(text))


def run_server(config: ServeConfig) -> None:
    """Check the artifact and the token, then serve until SIGINT/SIGTERM."""
    import uvicorn

    _log_setup()
    config.read_token()
    if not config.loopback:
        log.warning(
            "binding to %s: reachable beyond this machine%s",
            config.host,
            "" if os.environ.get(config.token_env) else f" and ${config.token_env} is unset (no auth)",
        )
    if warning := open_file_warning(config.max_connections):
        log.warning(warning)
    api = GeneratorAPI(config)
    api.setup(config.device)  # a bad artifact fails here, before the port opens
    common: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "access_log": config.access_log,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        **uvicorn_options(config),
    }
    if config.workers == 1:
        uvicorn.run(create_app(config, api), **common)
        return
    del api
    os.environ[CONFIG_ENV] = config.to_json()
    uvicorn.run("feature_unlearn.serve.http:app_from_env", factory=True, workers=config.workers, **common)
