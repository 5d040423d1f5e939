"""What a bench run could not measure, shared by every section's records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Failure:
    """Something not measured: a backend this machine lacks (no model, no batch), or one that failed.

    ``model`` names a trained model's row; ``resolution`` a row of the resolution bench's untrained ones.
    """

    name: str
    reason: str
    model: Optional[str] = None
    batch: Optional[int] = None
    resolution: Optional[int] = None
