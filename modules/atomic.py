"""Atomic file writes: write a temporary file in the same folder, fsync, then rename. Torch-free.

A reader never sees a half-written file: it sees the old content or the new, nothing between.
Small files: :func:`atomic_write_bytes` and friends. Whole outputs written by long operations (a merged
model, an edge package folder): :func:`atomic_output`, with :func:`clear_stale_temps` for what a killed
process left behind.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"


def fsync_dir(folder: Path) -> None:
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
    fsync_dir(path.parent)
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
    fsync_dir(path.parent)
    return path


# ---------------------------------------------------------------------------------------------
# whole outputs (a model file, a package folder): temp -> swap -> rollback
# ---------------------------------------------------------------------------------------------

#: ``.NAME.PID.TAG.tmp`` (dots in front: hidden, skipped by the scanners), optionally followed by the
#: ``.PID.tmp`` a nested atomic writer adds to it (``..NAME.PID.merge.tmp.PID.tmp``)
_OUTPUT_TEMP_RE = r"^\.+{name}\.(\d+)\.([A-Za-z0-9_-]+)\.tmp(\.\d+\.tmp)?$"
BACKUP_TAG = "old"


def output_temp_path(final: str | os.PathLike, tag: str) -> Path:
    """The hidden temp name of ``final`` for this process: ``.NAME.PID.TAG.tmp`` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.{tag}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours (EPERM)
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file, a link or a whole folder; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temp entries of ``final`` that dead processes left behind; returns what was removed.

    Temps of live processes (this one included) are kept. An output moved aside for a replacement
    (``.NAME.PID.old.tmp``) is put back when ``final`` is missing (the swap was killed half-way)."""
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(_OUTPUT_TEMP_RE.format(name=re.escape(final.name)))
    removed = []
    for child in sorted(parent.iterdir()):
        m = pattern.match(child.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        if m.group(2) == BACKUP_TAG and not m.group(3) and not final.exists():
            os.replace(child, final)
            log.info("restored %s from %s, left by an interrupted replacement", final, child)
            continue
        remove_path(child)
        log.info("removed %s, left by an interrupted write", child)
        removed.append(child)
    return removed


@contextmanager
def atomic_output(final: str | os.PathLike, *, tag: str = "write", folder: bool = False,
                  overwrite: bool = False, before_swap: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Write one output (a file or a folder) under a hidden temp name, then swap it into ``final``.

    Yields the temp path (``.NAME.PID.TAG.tmp`` beside ``final``; created empty when ``folder``). When the
    block ends normally, ``before_swap(temp)`` runs (a last check, or a test's pause), then the temp takes
    ``final``'s place: a file replaces a file in one rename; anything else moves the old output aside
    (``.NAME.PID.old.tmp``), renames, and puts the old one back if that rename fails. ``final`` existing
    without ``overwrite`` raises FileExistsError. Any exception removes the temp; a reader sees the old
    output or the new one, never part of one. Stale temps of dead processes are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_temps(final)
    temp = output_temp_path(final, tag)
    remove_path(temp)
    try:
        if folder:
            temp.mkdir()
        yield temp
        if before_swap is not None:
            before_swap(temp)
        _swap(temp, final, overwrite)
    finally:
        if temp.exists() or temp.is_symlink():
            remove_path(temp)
    fsync_dir(final.parent)


def _swap(temp: Path, final: Path, overwrite: bool) -> None:
    if not (final.exists() or final.is_symlink()):
        os.replace(temp, final)
        return
    if not overwrite:
        raise FileExistsError(errno.EEXIST, f"{final.name} already exists", str(final))
    if final.is_file() and not final.is_symlink() and temp.is_file():
        os.replace(temp, final)  # atomic on its own: the old file stays until the new one is in place
        return
    backup = output_temp_path(final, BACKUP_TAG)
    remove_path(backup)
    os.replace(final, backup)
    try:
        os.replace(temp, final)
    except BaseException:
        if not final.exists():
            os.replace(backup, final)
        raise
    remove_path(backup)
