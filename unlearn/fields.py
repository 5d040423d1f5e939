"""``opt``: a config dataclass field that carries its command-line help (the CLI is generated from it)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def opt(default: Any = ..., help: str = "", **meta: Any) -> Any:
    """A field with ``default`` (``...``: required) and metadata ``help`` plus ``flag`` / ``min`` / ``max``."""
    if default is ...:
        return field(metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})
