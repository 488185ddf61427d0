"""Atomic file writes: write a temporary file in the same folder, fsync, then rename. Torch-free.

A reader never sees a half-written file: it sees the old content or the new, nothing between.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

_TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); silently skipped where folders cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new hidden file next to ``path`` (mode from the umask), fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; an existing file keeps its permission bits."""
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        try:
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomic text write. Newlines are written as given (no platform translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    """Atomic JSON write: UTF-8, non-ASCII kept readable, trailing newline."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent) + "\n"
    return atomic_write_text(path, text)


def write_bytes_exclusive(path: str | os.PathLike, data: bytes) -> Path:
    """Create ``path`` with ``data`` atomically, never overwriting: raises ``FileExistsError`` if it exists.

    The complete temporary file is hard-linked to the final name (atomic and exclusive). Where the
    file system has no hard links, the name is first reserved with an exclusive create and then
    replaced by the complete file.
    """
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): reserve, then replace
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path
