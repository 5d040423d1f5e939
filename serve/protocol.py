"""HTTP plumbing for POST /v1/generate: the JSON body within a size limit, content negotiation, bearer auth."""

from __future__ import annotations

import hmac
import json
from typing import Any, Optional

from starlette.requests import ClientDisconnect, Request

from feature_unlearn.serve.errors import ApiError

JSON, PNG, NPY = "application/json", "image/png", "application/x-npy"
# Accept media type -> response format: JSON with base64 PNGs (the default), one raw PNG, or every image as one
# uint8 [N, H, W, C] .npy array with the per-image fields in headers (no PNG or base64 work on the server)
FORMATS = {
    JSON: "json",
    "application/*": "json",
    "*/*": "json",
    PNG: "png",
    "image/*": "png",
    NPY: "npy",
    "application/octet-stream": "npy",
}
# nginx's "client closed request": the client left, so no one reads the reply and it is not the
# server's fault (never a 5xx); the status still lands in the metrics and in one log line.
CLIENT_CLOSED = 499


def client_closed(detail: str) -> ApiError:
    return ApiError(CLIENT_CLOSED, "client_closed_request", f"the client closed the connection {detail}")


async def read_json(request: Request, limit: int) -> Any:
    """The parsed body; 415 unless it is JSON, 413 above ``limit`` bytes (declared or streamed), 400 if malformed,
    499 (``client_closed``) if the client hangs up before the body is complete."""
    given = request.headers.get("content-type")
    if given is None or given.split(";")[0].strip().lower() != JSON:
        shown = repr(given[:60]) if given is not None else "none"
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be {JSON}, got {shown}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body has {int(declared)} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
    except ClientDisconnect:
        expected = declared if declared.isdigit() else "an unknown number of"
        raise client_closed(f"after {len(body)} of {expected} body bytes") from None
    if not body.strip():
        raise ApiError(400, "malformed_json", 'the body is empty; send a JSON object such as {"n": 4, "seed": 0}')
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "malformed_json", f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):  # not UTF-8, nested too deep, an integer with thousands of digits
        raise ApiError(
            400, "malformed_json", "malformed JSON: not UTF-8, nested too deeply or a number too long"
        ) from None


def response_format(accept: Optional[str]) -> str:
    """'json', 'png' or 'npy': the client's most preferred format (``FORMATS``); 406 when it accepts none."""
    if not accept or not accept.strip():
        return "json"
    best: tuple[float, str] = (-1.0, "json")
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((_quality(p[2:]) for p in params if p.replace(" ", "").startswith("q=")), 1.0)
        fmt = FORMATS.get(media.lower())
        if fmt is not None and q > 0 and q > best[0]:
            best = (q, fmt)
    if best[0] < 0:
        raise ApiError(406, "not_acceptable", f"Accept must allow {JSON}, {PNG} or {NPY}, got {accept[:60]!r}")
    return best[1]


def _quality(text: str) -> float:
    try:
        q = float(text.strip("= "))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def check_bearer(authorization: Optional[str], expected: Optional[bytes]) -> None:
    """401 unless ``Authorization: Bearer <token>`` matches (constant-time); nothing to check when auth is off."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token (send Authorization: Bearer <token>)",
            {"WWW-Authenticate": "Bearer"},
        )
