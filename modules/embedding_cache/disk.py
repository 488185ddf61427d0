"""On-disk half of the embedding cache: one ``<digest>.safetensors`` file per entry.

Files carry their key (canonical JSON) and the value's structure in the safetensors metadata, so
a file is checked against the key that asked for it. A bad file is logged, deleted and treated
as a miss; it is never fatal. Disk use is bounded: the oldest files (by mtime, refreshed on each
load) go first. Nothing is read at construction; the folder is scanned (names and sizes only)
the first time the totals are needed.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch

from modules.embedding_cache.embeds import Embeds, flatten, unflatten
from modules.embedding_cache.key import CacheKey

log = logging.getLogger(__name__)

FILE_FORMAT = "visage-embeds-1"
SUFFIX = ".safetensors"
TMP_SUFFIX = ".tmp"
#: Temp files older than this are leftovers of a crashed writer and are removed by the scan.
STALE_TMP_S = 3600.0


@dataclass
class _FileInfo:
    size: int
    mtime: float


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    return meta


class DiskStore:
    """Thread-safe (its own lock, never held while the caller's lock is held)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._index: dict[str, _FileInfo] | None = None  # digest -> file info; None until scanned

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}{SUFFIX}"

    # -- index -----------------------------------------------------------------------------

    def _scan_locked(self) -> dict[str, _FileInfo]:
        if self._index is not None:
            return self._index
        index: dict[str, _FileInfo] = {}
        now = time.time()
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if entry.name.endswith(TMP_SUFFIX):
                    if now - st.st_mtime > STALE_TMP_S:
                        os.remove(entry.path)
                    continue
                if entry.name.endswith(SUFFIX):
                    index[entry.name[: -len(SUFFIX)]] = _FileInfo(st.st_size, st.st_mtime)
            except OSError as exc:
                log.warning("embedding cache: cannot inspect %s: %s", entry.path, exc)
        self._index = index
        return index

    def _forget_locked(self, digest: str) -> None:
        if self._index is not None:
            self._index.pop(digest, None)

    def totals(self) -> tuple[int, int]:
        """(number of files, bytes on disk)."""
        with self._lock:
            index = self._scan_locked()
            return len(index), sum(info.size for info in index.values())

    def contains(self, key: CacheKey) -> bool:
        return self.path(key.digest()).is_file()

    # -- read / write ----------------------------------------------------------------------

    def _discard(self, digest: str, reason: str) -> None:
        path = self.path(digest)
        log.warning("embedding cache: ignoring %s (%s); removing it", path.name, reason)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("embedding cache: cannot remove %s: %s", path, exc)
        with self._lock:
            self._forget_locked(digest)

    def load(self, key: CacheKey) -> tuple[Embeds, float] | None:
        """``(embeds, compute_s)`` from the key's file, or ``None`` (missing or bad file)."""
        digest = key.digest()
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("embedding cache: cannot read %s: %s", path, exc)
            return None
        try:
            meta = _read_metadata(data)
            if meta.get("format") != FILE_FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            if meta.get("key") != key.canonical():
                raise ValueError("stored key does not match")
            structure = json.loads(meta["structure"])
            compute_s = float(meta.get("compute_s", "0"))
            embeds = unflatten(safetensors.torch.load(data), structure)
        # A cache file must never be fatal: any parse/validation failure is a miss.
        except Exception as exc:  # noqa: BLE001
            self._discard(digest, f"{type(exc).__name__}: {exc}")
            return None
        now = time.time()
        try:
            os.utime(path, (now, now))  # recently used: evicted last
        except OSError:
            pass
        with self._lock:
            if self._index is not None:
                self._index[digest] = _FileInfo(len(data), now)
        return embeds, compute_s if compute_s >= 0 else 0.0

    def save(self, key: CacheKey, embeds: Embeds, compute_s: float) -> bool:
        """Write atomically (temp file + ``os.replace``), then trim to ``max_bytes``."""
        digest = key.digest()
        tensors, structure = flatten(embeds)
        metadata = {
            "format": FILE_FORMAT,
            "key": key.canonical(),
            "structure": json.dumps(structure, sort_keys=True),
            "compute_s": repr(float(compute_s)),
        }
        try:
            data = safetensors.torch.save(tensors, metadata=metadata)
        except (ValueError, TypeError, RuntimeError, safetensors.SafetensorError) as exc:
            log.warning("embedding cache: cannot serialize entry %s: %s", digest[:12], exc)
            return False
        if len(data) > self.max_bytes:
            return False
        path = self.path(digest)
        tmp = self.root / f".{digest}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("embedding cache: cannot write %s: %s", path, exc)
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        with self._lock:
            index = self._scan_locked()
            index[digest] = _FileInfo(len(data), time.time())
            victims = self._pick_victims_locked(keep=digest)
            for victim in victims:
                index.pop(victim, None)
        for victim in victims:
            try:
                self.path(victim).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("embedding cache: cannot remove %s: %s", victim, exc)
        return True

    def _pick_victims_locked(self, keep: str) -> list[str]:
        index = self._index or {}
        total = sum(info.size for info in index.values())
        victims = []
        for digest, info in sorted(index.items(), key=lambda item: item[1].mtime):
            if total <= self.max_bytes:
                break
            if digest == keep:
                continue
            victims.append(digest)
            total -= info.size
        return victims

    def clear(self) -> None:
        """Remove every cache file (temp files of running writers are left alone)."""
        with self._lock:
            index = self._scan_locked()
            digests = list(index)
            index.clear()
        for digest in digests:
            try:
                self.path(digest).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("embedding cache: cannot remove %s: %s", digest, exc)
