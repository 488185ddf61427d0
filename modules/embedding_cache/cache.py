"""Byte-bounded LRU of prompt embeddings, optionally persisted to disk.

One lock guards the in-RAM state; it is never held while computing, copying tensors or doing
file I/O. Cached tensors live on the CPU and are never modified in place, so copies can be made
outside the lock. Concurrent requests for the same missing key share one computation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modules.embedding_cache.disk import DiskStore
from modules.embedding_cache.embeds import Embeds, materialize, nbytes, to_cpu
from modules.embedding_cache.key import CacheKey
from modules.embedding_cache.stats import CacheStats, WarmReport
from modules.errors import InvalidRequest

log = logging.getLogger(__name__)

DEFAULT_MAX_DISK_BYTES = 1 << 30  # 1 GiB

Compute = Callable[[], Embeds]


class SkipWarm(Exception):
    """Raised by a warm-up compute that decided not to run (e.g. the model changed): not a failure."""


@dataclass
class _Entry:
    embeds: Embeds  # CPU, never mutated
    nbytes: int
    compute_s: float


@dataclass
class _Pending:
    """A computation in progress; other threads asking for the same key wait on it."""

    event: threading.Event = field(default_factory=threading.Event)
    result: Embeds | None = None
    compute_s: float = 0.0


class EmbeddingCache:
    """Prompt-embedding cache: ``get`` / ``put`` / ``get_or_compute`` / ``warm`` / ``stats``.

    ``max_bytes`` bounds the RAM copy (sum of tensor ``nbytes``); an entry larger than it is
    not cached. With ``persist_dir`` every cached entry is also written as a safetensors file,
    bounded by ``max_disk_bytes``, and loaded lazily on a RAM miss.
    """

    def __init__(
        self,
        max_bytes: int,
        persist_dir: Path | None = None,
        max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
    ):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidRequest("max_bytes", "must be an integer >= 0")
        if isinstance(max_disk_bytes, bool) or not isinstance(max_disk_bytes, int) or max_disk_bytes < 0:
            raise InvalidRequest("max_disk_bytes", "must be an integer >= 0")
        self.max_bytes = max_bytes
        self._disk = DiskStore(Path(persist_dir), max_disk_bytes) if persist_dir is not None else None
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, _Pending] = {}
        self._hits = 0
        self._misses = 0
        self._disk_hits = 0
        self._time_saved_s = 0.0

    # -- internals (`*_locked`: caller holds self._lock; the rest: caller holds no lock) --

    def _insert_locked(self, digest: str, entry: _Entry) -> bool:
        old = self._entries.pop(digest, None)
        if old is not None:
            self._bytes -= old.nbytes
        if entry.nbytes > self.max_bytes:
            return False
        self._entries[digest] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
        return True

    def _find(self, key: CacheKey) -> tuple[Embeds, float, bool] | None:
        """``(cpu_embeds, seconds_saved, from_disk)`` or ``None``; counts nothing."""
        digest = key.digest()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
                return entry.embeds, entry.compute_s, False
        if self._disk is None:
            return None
        started = time.perf_counter()
        loaded = self._disk.load(key)
        if loaded is None:
            return None
        embeds, compute_s = loaded
        entry = _Entry(embeds, nbytes(embeds), compute_s)
        with self._lock:
            self._insert_locked(digest, entry)
        return embeds, max(0.0, compute_s - (time.perf_counter() - started)), True

    def _count(self, hit: bool, saved_s: float = 0.0, from_disk: bool = False) -> None:
        with self._lock:
            if hit:
                self._hits += 1
                self._time_saved_s += saved_s
                self._disk_hits += int(from_disk)
            else:
                self._misses += 1

    def _store(self, key: CacheKey, cpu_embeds: Embeds, compute_s: float) -> bool:
        entry = _Entry(cpu_embeds, nbytes(cpu_embeds), compute_s)
        with self._lock:
            cached = self._insert_locked(key.digest(), entry)
        if cached and self._disk is not None:
            self._disk.save(key, cpu_embeds, compute_s)
        return cached

    def _get_or_compute_cpu(self, key: CacheKey, compute: Compute, count: bool) -> Embeds:
        digest = key.digest()
        while True:
            found = self._find(key)
            if found is not None:
                if count:
                    self._count(True, found[1], found[2])
                return found[0]
            with self._lock:
                entry = self._entries.get(digest)  # filled while we looked on disk?
                if entry is not None:
                    self._entries.move_to_end(digest)
                    pending, owner = None, False
                else:
                    pending = self._pending.get(digest)
                    owner = pending is None
                    if owner:
                        pending = self._pending[digest] = _Pending()
            if entry is not None:
                if count:
                    self._count(True, entry.compute_s)
                return entry.embeds
            if not owner:
                started = time.perf_counter()
                pending.event.wait()
                if pending.result is not None:
                    if count:
                        self._count(True, max(0.0, pending.compute_s - (time.perf_counter() - started)))
                    return pending.result
                continue  # the owner failed: try again (possibly as the owner)
            return self._compute_as_owner(key, digest, compute, pending, count)

    def _compute_as_owner(
        self, key: CacheKey, digest: str, compute: Compute, pending: _Pending, count: bool
    ) -> Embeds:
        if count:
            self._count(False)
        try:
            started = time.perf_counter()
            raw = compute()
            compute_s = time.perf_counter() - started
            cpu_embeds = to_cpu(raw)
            entry = _Entry(cpu_embeds, nbytes(cpu_embeds), compute_s)
            with self._lock:
                cached = self._insert_locked(digest, entry)
            pending.result, pending.compute_s = cpu_embeds, compute_s
        finally:
            with self._lock:
                self._pending.pop(digest, None)
            pending.event.set()
        if cached and self._disk is not None:
            self._disk.save(key, cpu_embeds, compute_s)
        return cpu_embeds

    # -- public API ------------------------------------------------------------------------

    def get(
        self, key: CacheKey, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Embeds | None:
        """Copies of the cached embeddings on ``device`` / in ``dtype``, or ``None``."""
        found = self._find(key)
        if found is None:
            self._count(False)
            return None
        self._count(True, found[1], found[2])
        return materialize(found[0], device, dtype)

    def put(self, key: CacheKey, embeds: Embeds, compute_s: float = 0.0) -> bool:
        """Store a CPU copy; ``False`` when the entry is larger than ``max_bytes``."""
        return self._store(key, to_cpu(embeds), float(compute_s))

    def get_or_compute(
        self,
        key: CacheKey,
        compute: Compute,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Embeds:
        """Cached copies, or ``compute()`` (called without the cache lock) stored and returned.

        Hits and misses are counted; a hit adds the entry's recorded compute time to
        ``time_saved_s``. Threads asking for a key being computed wait for that result.
        Miss and hit return the same bits (both are copies of the stored CPU tensors).
        """
        return materialize(self._get_or_compute_cpu(key, compute, count=True), device, dtype)

    def contains(self, key: CacheKey) -> bool:
        """In RAM or on disk (the file is not read or verified)."""
        with self._lock:
            if key.digest() in self._entries:
                return True
        return self._disk is not None and self._disk.contains(key)

    def warm(
        self,
        jobs: Iterable[tuple[CacheKey, Compute]],
        should_stop: Callable[[], bool] | None = None,
    ) -> WarmReport:
        """Pre-compute entries (for a background thread). Not counted as hits or misses.

        ``should_stop`` is checked before each job; a failing compute is logged and skipped.
        The cache lock is never held while a compute runs.
        """
        computed = skipped = failed = 0
        for key, compute in jobs:
            if should_stop is not None and should_stop():
                return WarmReport(computed, skipped, failed, stopped=True)
            if self.contains(key):
                skipped += 1
                continue
            try:
                self._get_or_compute_cpu(key, compute, count=False)
            except SkipWarm:
                skipped += 1
            # Warming is best effort: one bad prompt must not end the background thread.
            except Exception as exc:  # noqa: BLE001
                failed += 1
                log.warning("embedding cache: warming %s failed: %s", key.digest()[:12], exc)
            else:
                computed += 1
        return WarmReport(computed, skipped, failed, stopped=False)

    def stats(self) -> CacheStats:
        disk_entries, disk_bytes = self._disk.totals() if self._disk is not None else (0, 0)
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._entries),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                time_saved_s=self._time_saved_s,
                disk_entries=disk_entries,
                disk_bytes=disk_bytes,
                disk_hits=self._disk_hits,
            )

    def clear(self, disk: bool = True) -> None:
        """Drop every entry (and, with ``disk``, every file). Counters are kept."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        if disk and self._disk is not None:
            self._disk.clear()
