"""Plain result records of the embedding cache. Torch-free (the UI shows them)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int  # in RAM
    bytes: int  # tensor bytes in RAM
    max_bytes: int
    time_saved_s: float  # compute time the hits did not spend
    disk_entries: int  # files on disk (0 without persistence)
    disk_bytes: int = 0
    disk_hits: int = 0  # hits served by loading a file (included in ``hits``)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(frozen=True)
class WarmReport:
    computed: int  # entries computed and stored
    skipped: int  # already cached (RAM or disk)
    failed: int  # compute raised; logged and skipped
    stopped: bool  # ``should_stop`` returned True before the end
