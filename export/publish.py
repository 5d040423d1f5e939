"""Build in a temporary directory beside the target, then rename: never a half-written artifact."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from feature_unlearn.unlearn.errors import ConfigError


def refuse_existing(path: Path, force: bool, flag: str) -> None:
    if (path.exists() or path.is_symlink()) and not force:
        raise ConfigError(f"{flag} {path}: already exists; choose another path or pass --force to replace it")


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A fresh directory ``.<name>.*`` beside ``target``; removed if the block raises."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_modes(root: Path) -> None:
    """Temporary files and dirs are private (0600/0700); published ones get the usual modes (a server may read them)."""
    mask = _umask()
    root.chmod(0o777 & ~mask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing target (allowed by --force) is swapped out, then deleted."""
    publish_modes(tmp)
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "previous")
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
