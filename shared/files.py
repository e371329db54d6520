"""Small file-system helpers shared by the gateway, the bots' FreqAI model class and the management server."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a mix.

    The temporary file is created with ``mode`` before any byte is written (secrets never sit in a
    world-readable file), fsynced, renamed over ``path``, and the folder is fsynced.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _regular(fd: int, path: Path) -> int:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file: {path}")
    return fd


def open_read_nofollow(path: Path) -> BinaryIO:
    """``path`` opened for reading, refusing a symlink, a FIFO or a device in its place.

    Sandboxed code owns its folder and could put a symlink to a key (or a FIFO that blocks forever) where
    a service reads its log or its results: a service never follows one there.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    return os.fdopen(_regular(os.open(path, flags), path), "rb")


def open_append_nofollow(path: Path) -> BinaryIO:
    """``path`` opened for appending (created 0600), refusing a symlink, a FIFO or a device in its place."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    return os.fdopen(_regular(os.open(path, flags, 0o600), path), "ab")


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, all symlinks resolved, lies in ``folder`` (or is it)."""
    real, home = path.resolve(), folder.resolve()
    return real == home or home in real.parents


def close_to_others(root: Path) -> int:
    """Take every permission of "other" users from ``root`` and what is under it (links are not followed; only what
    this user owns is changed); how many paths changed. Group permissions stay (a sandboxed bot's group)."""
    changed = 0
    uid = os.geteuid()
    for folder, dirs, files in os.walk(root):
        for path in [folder, *(os.path.join(folder, n) for n in (*dirs, *files))]:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or not st.st_mode & 0o007:
                continue
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o007)
            changed += 1
    return changed
