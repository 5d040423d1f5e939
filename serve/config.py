"""The service's settings: one frozen dataclass, checked on construction.

The bearer token is not a setting: it is read from the environment variable ``token_env``
(``UNLEARN_SERVE_TOKEN`` by default) so it never appears in a command line, a log or a repr.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from feature_unlearn.serve.errors import ServeError
from feature_unlearn.serve.policy import POLICIES

TOKEN_ENV = "UNLEARN_SERVE_TOKEN"
CONFIG_ENV = "UNLEARN_SERVE_CONFIG"  # how ``--workers N`` hands the settings to each worker process
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
LATENT_POLICIES = ("allow", "deny")


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A field with its command-line help (``unlearn-serve`` and ``unlearn-cli serve`` are generated from them)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class ServeConfig:
    artifact: Path = field(metadata={"help": "An export directory (model.onnx + manifest.json) or a model.onnx."})
    host: str = _opt("127.0.0.1", "Address to bind (loopback by default).")
    port: int = _opt(8000, "TCP port (0: any free one).")
    max_batch: int = _opt(64, "Images per model call when merging concurrent requests.")
    max_delay_ms: float = _opt(5.0, "How long the first request of a batch may wait for company.")
    workers: int = _opt(1, "Processes, each with its own model and metrics.")
    max_images: int = _opt(64, "Images per request.")
    max_body_bytes: int = _opt(1 << 20, "Request body limit.")
    timeout_s: float = _opt(30.0, "Per-request limit on receiving the body, and on queueing + generation.")
    max_queue: int = _opt(4096, "Images waiting for the model before requests get a 503.")
    threads: Optional[int] = _opt(None, "ONNX Runtime threads (default: all cores).")
    device: str = _opt("auto", "auto, cpu, cuda or tensorrt.")
    token_env: str = _opt(TOKEN_ENV, "Environment variable holding the bearer token (unset: no auth).")
    access_log: bool = _opt(False, "Log every request.")
    header_timeout_s: float = _opt(10.0, "Close a connection whose request head has not arrived within this.")
    pin: Optional[str] = _opt(None, "Refuse any model.onnx whose sha256 is not this one (keep the digest out of band).")
    latents: str = _opt(
        "allow",
        "allow: requests may send their own latents; deny: seeds only (an attacker cannot search the latent space).",
    )
    on_flagged: Optional[str] = _opt(
        None,
        "What to do with an image the in-graph image check flags (artifacts exported with --image-check): "
        "resample (default; seed requests get a fresh latent, sent latents are blanked), blank or reject (HTTP 422).",
    )
    max_connections: int = _opt(1000, "Open connections (or requests in flight) above which requests get a JSON 503.")
    fp32_below: Optional[int] = _opt(
        None,
        "bf16 artifacts: batches smaller than this run on the artifact's fp32 graph (default: the crossover its "
        "export measured; 1: always the bf16 program).",
    )
    eager_program: bool = _opt(
        False,
        "bf16 artifacts: run the PyTorch program uncompiled (slower; for a machine without a C++ compiler, "
        "which Inductor needs to compile it at load).",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact", Path(self.artifact))
        for name in ("max_batch", "workers", "max_images", "max_body_bytes", "max_queue", "max_connections"):
            _positive_int(name, getattr(self, name))
        for name in ("threads", "fp32_below"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ServeError(f"--port {self.port!r}: must be an integer between 0 and 65535")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise ServeError(f"--max-delay-ms {self.max_delay_ms}: must be between 0 and 10000")
        if not 0 < self.timeout_s <= 3600:
            raise ServeError(f"--timeout-s {self.timeout_s}: must be above 0 and at most 3600")
        if not 0 < self.header_timeout_s <= 3600:
            raise ServeError(f"--header-timeout-s {self.header_timeout_s}: must be above 0 and at most 3600")
        if self.on_flagged is not None and self.on_flagged not in POLICIES:
            raise ServeError(f"--on-flagged {self.on_flagged!r}: choose from {', '.join(POLICIES)}")
        if self.max_queue < self.max_images:
            raise ServeError(
                f"--max-queue {self.max_queue} is below --max-images {self.max_images}: no request would fit"
            )
        if self.device not in DEVICES:
            raise ServeError(f"--device {self.device!r}: choose from {', '.join(DEVICES)}")
        if self.latents not in LATENT_POLICIES:
            raise ServeError(f"--latents {self.latents!r}: choose from {', '.join(LATENT_POLICIES)}")

    @property
    def ort_threads(self) -> int:
        """``threads``, else all cores. Leaving one to the event loop was slower on 2 cores for every response
        format (faces-dcgan, 64 images per request: HTTP 0.56-0.58x in-process with 1 thread, 0.74-0.87x with 2;
        p50 42 -> 28-32 ms): the model's batch is the long step, and HTTP work fits in its gaps."""
        return self.threads or os.cpu_count() or 1

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
