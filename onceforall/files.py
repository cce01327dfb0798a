"""Atomic file writes: what every file of a run directory and of an export goes through.

A process killed at any moment must leave each file either as it was or whole: written to a
temporary name in the same folder, fsynced, renamed over the target, and the rename made durable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_with", "fsync_path", "temp_path"]


def fsync_path(path: str | Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path(path: str | Path) -> Path:
    """A new, empty temporary file beside ``path`` (hidden, ``.tmp``), to be renamed over it.

    It has the permissions ``path`` has, or a new file would get (``mkstemp`` makes it readable
    by its owner alone, and the rename would keep that: exported models unreadable by a server
    running as another user)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return Path(tmp)


def atomic_write_with(path: str | Path, write: Callable[[str], object]) -> Path:
    """``write(tmp)`` (a writer that takes a file name, as exporters do) to a temporary file in
    the same folder, fsynced, then renamed over ``path``; the rename made durable."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(str(tmp))
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # make the rename itself durable
    return path


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    return atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))
