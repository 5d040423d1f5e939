"""The guard's modes, torch-free so that configs and the CLI can name them without loading torch."""

from __future__ import annotations

import enum


class GuardMode(str, enum.Enum):
    """shift: latents above t move to ẑ; flag: only reported; off: neither (the score is still computed)."""

    SHIFT = "shift"
    FLAG = "flag"
    OFF = "off"


# The one list of guard modes of the package; the runtime's manifest schema (serve/manifest.py, which
# imports nothing from here) must allow exactly these, and a test holds them equal.
MODES = tuple(m.value for m in GuardMode)
