"""User-facing errors.

Every mistake a user can make (bad flag, missing file, corrupt checkpoint) raises a
``UserError`` subclass. The CLI turns it into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user handed us; the message names the flag, file or field."""


class CheckpointError(UserError):
    """A checkpoint or sidecar is missing, corrupt, or does not match its weights."""


class ConfigError(UserError):
    """An option value or combination is not supported."""


class DataError(UserError):
    """A dataset or labels file is unusable."""
