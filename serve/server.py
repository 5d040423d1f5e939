"""The service's HTTP/1.1 protocol for uvicorn: a request-head timeout, a connection limit, JSON refusals.

uvicorn 0.54 picks its protocol by what is installed ("auto": httptools if importable, else h11;
"zttp" only on request), so the same command could behave differently on two machines. The
service names one, h11, and subclasses it to close three holes uvicorn leaves open:

* no timeout on reading a request head: a client that connects and sends nothing (or half a
  head) held its connection forever; here it is closed after ``header_timeout_s``;
* ``limit_concurrency`` answered with a plain-text 503; here the same check answers JSON;
* uvicorn's own refusals (400 for a malformed request, 431 for a huge head, 500 when the app
  raised before responding) were plain text; here every one is ``{"error": {"code", "message"}}``.

Refusals log at most one line each, and ``LogThrottle`` caps a flood of the same line to one a second.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Optional

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from feature_unlearn.serve.config import ServeConfig

log = logging.getLogger("serve")
HEAD_LIMIT = 16 * 1024  # bytes of request line + headers (h11's default, named so the 431 can say it)
JSON_TYPE = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")
Headers = Iterable[tuple[bytes, bytes]]


def error_json(code: str, message: str) -> bytes:
    """The service's one error shape, as the app's handlers write it."""
    return json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")


def raw_error(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for when no ASGI cycle exists."""
    body, reason = error_json(code, message), HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def send_error(send: Callable[[Any], Any], status: int, code: str, message: str, headers: Headers = ()) -> None:
    """An ASGI error response in the service's JSON shape; it closes the connection."""
    body = error_json(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON_TYPE, (b"content-length", str(len(body)).encode()), CLOSE, *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Connection(h11.Connection):
    """h11's connection, keeping the status its last protocol error suggests (431 for a huge head)."""

    status_hint = 400

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.status_hint = exc.error_status_hint
            raise


class ServeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout, a JSON 503 over ``max_connections``, JSON refusals."""

    conn: _Connection

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: Optional[asyncio.AbstractEventLoop] = None,
        *,
        header_timeout_s: float = 10.0,
        max_connections: Optional[int] = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size or HEAD_LIMIT)
        self.header_timeout_s, self.max_connections = header_timeout_s, max_connections
        self.head_timer: Optional[asyncio.TimerHandle] = None
        self.served = False  # a request was answered on this connection (idle keep-alive is no refusal)
        self.inner_app, self.app = self.app, self.guarded_app
        self.limit_concurrency = None  # uvicorn's check answers plain text; guarded_app does it instead

    # The head timer runs whenever the connection waits for a request head: from connect, and
    # from each response until the next head is complete. It is not restarted by partial data,
    # so a client trickling a byte at a time (slowloris) is closed on time as well.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.watch_head()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self.head_too_large(data):
            log.warning("refused a request head of more than %d bytes from %s", HEAD_LIMIT, self.peer())
            self.refuse(431, "headers_too_large", f"the request line and headers exceed {HEAD_LIMIT} bytes")
            return
        super().data_received(data)
        self.watch_head()

    def head_too_large(self, data: bytes) -> bool:
        """h11's size limit only applies to a head still incomplete after a read; a whole one in one read passes."""
        buffered = self.conn.trailing_data[0] + data  # under HEAD_LIMIT + one read: anything longer was refused
        end = buffered.find(b"\r\n\r\n")
        return (end if end >= 0 else len(buffered)) > HEAD_LIMIT

    def on_response_complete(self) -> None:
        self.served = True
        super().on_response_complete()
        self.watch_head()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.stop_head_timer()
        super().connection_lost(exc)

    def watch_head(self) -> None:
        serving = self.cycle is not None and not self.cycle.response_complete
        if serving or self.transport.is_closing():
            self.stop_head_timer()
        elif self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout_s, self.head_timed_out)

    def stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        pending = bool(self.conn.trailing_data[0])
        if pending or not self.served:  # an idle keep-alive connection closing is routine, not worth a line
            log.warning(
                "closed a connection from %s: no complete request head within %g s", self.peer(), self.header_timeout_s
            )
        if pending and self.conn.their_state is h11.IDLE:  # half a head: tell the client why
            self.refuse(408, "request_timeout", f"no complete request head within {self.header_timeout_s:g} s")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text refusal of a request h11 cannot parse (it has logged one line), in JSON."""
        if self.conn.status_hint == 431:
            self.refuse(431, "headers_too_large", f"the request line and headers exceed {HEAD_LIMIT} bytes")
        else:
            self.refuse(400, "bad_request", "invalid HTTP/1.1 request (malformed request line or headers)")

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer outside any request cycle (raw bytes: h11's state may be ERROR) and close."""
        self.transport.write(raw_error(status, code, message))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """Silent: with ``ws="none"`` uvicorn logged two lines per request carrying ``Upgrade: websocket``,
        though the request is then served as plain HTTP (no route here takes WebSockets)."""

    def peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"

    def overloaded(self) -> bool:
        # The connection and the task of this request are already counted, hence ">".
        limit = self.max_connections
        return limit is not None and (len(self.connections) > limit or len(self.tasks) > limit)

    async def guarded_app(self, scope: Any, receive: Any, send: Any) -> None:
        """The app behind the connection limit; an exception it did not answer becomes a JSON 500."""
        if self.overloaded():
            log.warning(
                "refused %s %s from %s: more than %d connections or requests",
                scope["method"],
                scope["path"][:100],
                self.peer(),
                self.max_connections,
            )
            await send_error(
                send,
                503,
                "overloaded",
                f"more than {self.max_connections} connections are open; retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.inner_app(scope, receive, watched)
        except Exception as exc:
            if (
                started
            ):  # the app's handler answered and logged it; Starlette re-raises only so servers may log it twice
                log.debug("after the response started: %r", exc)
                return
            log.exception("unhandled error on %s %s", scope["method"], scope["path"][:100])
            await send_error(send, 500, "internal", "internal error (the server log has the details)")
            return
        if not started:
            log.error("no response to %s %s", scope["method"], scope["path"][:100])
            await send_error(send, 500, "internal", "internal error (the server log has the details)")


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The protocol settings for uvicorn.run: h11 with the limits above, no WebSockets (no route uses them).

    ``http`` is a partial of a module-level class so ``--workers N`` can pickle it into each worker.
    """
    protocol = functools.partial(
        ServeProtocol, header_timeout_s=config.header_timeout_s, max_connections=config.max_connections
    )
    return {"http": protocol, "ws": "none", "h11_max_incomplete_event_size": HEAD_LIMIT}


def open_file_warning(max_connections: int, soft_limit: Optional[int] = None) -> Optional[str]:
    """A warning when the process may run out of file descriptors before ``max_connections`` is reached.

    Past the limit accept() fails (EMFILE) and new clients hang instead of getting the JSON 503.
    """
    if soft_limit is None:
        try:
            import resource  # Unix only
        except ImportError:
            return None
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit == resource.RLIM_INFINITY:
            return None
    if max_connections + 64 <= soft_limit:  # the model, the log, the listening socket and libraries need some
        return None
    return (
        f"--max-connections {max_connections} is not below the open-file limit {soft_limit} (ulimit -n) by 64: "
        "raise the limit or lower --max-connections, or clients past it will hang instead of getting a 503"
    )


class LogThrottle(logging.Filter):
    """At most one WARNING-or-worse record per logger and message template per ``interval_s``.

    A flood of refusals (a disconnecting loop, a port scanner) once wrote 45 MB of log in 10 s and
    starved real clients; the next line that passes says how many like it were held back.
    """

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self.last: dict[tuple[str, str], float] = {}
        self.held: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()  # the batcher's worker thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        with self.lock:
            last = self.last.get(key)
            if last is not None and now - last < self.interval_s:
                self.held[key] = self.held.get(key, 0) + 1
                return False
            if len(self.last) > 1000:  # templates are few; pre-formatted messages must not grow this forever
                self.last.clear()
                self.held.clear()
            self.last[key] = now
            held = self.held.pop(key, 0)
        if held and last is not None:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f} s]"
        return True


def install_log_throttle(names: Iterable[str] = ("serve", "uvicorn.error")) -> None:
    """Attach one LogThrottle to each logger (once; uvicorn's dictConfig keeps a logger's filters)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LogThrottle) for f in logger.filters):
            logger.addFilter(LogThrottle())
