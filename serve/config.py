"""The service's settings: one frozen dataclass, checked on construction.

The bearer token is not a setting: it is read from the environment variable ``token_env``
(``UNLEARN_SERVE_TOKEN`` by default) so it never appears in a command line, a log or a repr.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from feature_unlearn.serve.errors import ServeError

TOKEN_ENV = "UNLEARN_SERVE_TOKEN"
CONFIG_ENV = "UNLEARN_SERVE_CONFIG"  # how ``--workers N`` hands the settings to each worker process
DEVICES = ("auto", "cpu", "cuda", "tensorrt")


@dataclass(frozen=True)
class ServeConfig:
    artifact: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # images per runtime call
    max_delay_ms: float = 5.0  # how long the first request of a batch may wait for company
    workers: int = 1
    max_images: int = 64  # per request
    max_body_bytes: int = 1 << 20
    timeout_s: float = 30.0  # queue + model time per request
    max_queue: int = 4096  # images waiting for the model; above it, 503
    threads: Optional[int] = None  # ONNX Runtime intra-op threads (default: ort_threads)
    device: str = "auto"
    token_env: str = TOKEN_ENV
    access_log: bool = False
    header_timeout_s: float = 10.0  # a connection must deliver a complete request head within this, else it is closed
    pin: Optional[str] = None  # sha256 of model.onnx kept out of band: any other artifact is refused
    max_connections: int = 1000  # open connections (or requests in flight) above which requests get a 503

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact", Path(self.artifact))
        for name in ("max_batch", "workers", "max_images", "max_body_bytes", "max_queue", "max_connections"):
            _positive_int(name, getattr(self, name))
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ServeError(f"--port {self.port!r}: must be an integer between 0 and 65535")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise ServeError(f"--max-delay-ms {self.max_delay_ms}: must be between 0 and 10000")
        if not 0 < self.timeout_s <= 3600:
            raise ServeError(f"--timeout-s {self.timeout_s}: must be above 0 and at most 3600")
        if not 0 < self.header_timeout_s <= 3600:
            raise ServeError(f"--header-timeout-s {self.header_timeout_s}: must be above 0 and at most 3600")
        if self.max_queue < self.max_images:
            raise ServeError(f"--max-queue {self.max_queue} is below --max-images {self.max_images}: no request would fit")
        if self.device not in DEVICES:
            raise ServeError(f"--device {self.device!r}: choose from {', '.join(DEVICES)}")

    @property
    def ort_threads(self) -> int:
        """``threads``, else all cores but one: the event loop needs a core to parse requests meanwhile."""
        return self.threads or max(1, (os.cpu_count() or 1) - 1)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "artifact": str(self.artifact)})

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        try:
            fields: dict[str, Any] = json.loads(text)
            return cls(**fields)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ServeError(f"${CONFIG_ENV}: not a serve configuration ({exc})") from None

    def read_token(self) -> Optional[str]:
        """The bearer token from the environment, or None when auth is off; an empty one is refused.

        Surrounding whitespace is dropped: ``export TOKEN=$(cat file)`` or a secrets mount often
        ends in a newline, which no client sends back, so every request would be a 401.
        """
        token = os.environ.get(self.token_env)
        if token is None:
            return None
        if not token.strip():
            raise ServeError(f"${self.token_env} is set but empty: unset it to serve without auth, or give a token")
        return token.strip()


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ServeError(f"--{name.replace('_', '-')} {value!r}: must be a positive integer")
