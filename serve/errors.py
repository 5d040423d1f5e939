"""Typed errors of the HTTP service.

``ServeError``: the service cannot start (bad option, unreadable artifact, empty token); the CLI
prints it as one line. ``ApiError``: one request is refused; the app answers it as
``{"error": {"code": ..., "message": ...}}`` with its 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

from typing import Optional


class ServeError(Exception):
    """The service cannot start; the message names the option, file or variable."""


class ApiError(Exception):
    """A refused request: HTTP status, a stable machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class QueueFullError(ApiError):
    """More images wait for the model than the queue may hold."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            503, "overloaded", f"more than {limit} images are waiting; retry shortly", {"Retry-After": "1"}
        )


class ClosingError(ApiError):
    """The service is shutting down and will not run this request."""

    def __init__(self) -> None:
        super().__init__(503, "shutting_down", "the service is shutting down")
