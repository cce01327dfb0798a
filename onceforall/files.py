"""Atomic file writes: what every file of a run directory and of an export goes through.

A process killed at any moment must leave each file either as it was or whole: written to a
temporary name in the same folder, fsynced, renamed over the target, and the rename made durable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_with", "check_writable", "fsync_path", "temp_path"]


def check_writable(path: str | Path, option: str = "--out", *, folder: bool = True) -> None:
    """Fail at once, before any work, where ``path`` (a folder, or with ``folder=False`` a file;
    existing or to be created) cannot be written: a file stands where a folder must be, or the
    folder where writing starts denies it. ``option`` is what the user changes to fix it.

    Raises:
        FileExistsError: a file where a folder is needed (or a folder where the file goes).
        PermissionError: the folder where writing starts is not writable.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise FileExistsError(f"{option} {path} is a file, not a directory; choose a directory")
        if not folder and path.is_dir():
            raise FileExistsError(f"{option} {path} is a directory; give a file name")
    base = next(d for d in (path, *path.parents) if d.exists())  # where the writing starts
    if base != path and not base.is_dir():
        raise FileExistsError(
            f"{base} is a file, so {path} cannot be created; choose another {option}"
        )
    writes_in = base if base.is_dir() else base.parent  # a file is replaced from its folder
    if not os.access(writes_in, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{writes_in} is not writable, so {path} cannot be written: choose another {option}, "
            "or get write permission there"
        )


def fsync_path(path: str | Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """A new, empty temporary file beside ``path`` (hidden, ``.tmp``), to be renamed over it.

    It has the permissions ``path`` has, or those a new file gets (the umask's): ``mkstemp``
    would make it readable by its owner alone, and the rename would keep that (exported models
    unreadable by a server running as another user)."""
    path = Path(path)
    for _ in range(100):  # a name clash is all but impossible: bounded all the same
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
        except FileExistsError:
            continue
        try:
            if path.exists():
                os.fchmod(fd, path.stat().st_mode & 0o7777)
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


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
