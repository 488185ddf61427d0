"""The model registry: what models exist, what they are, and their hashes. Identifies, never loads.

Torch-free.
"""
from __future__ import annotations

import difflib
import os
import re
import threading
from pathlib import Path

from modules.checkpoints.hf_cache import default_hf_cache
from modules.errors import ModelNotFound
from modules.paths import Folders
from modules.registry.entry import ModelEntry, ModelFormat
from modules.registry.hashing import (
    DIFFUSERS_HASH_NAMES, DIFFUSERS_HASH_SUFFIXES, EDGE_HASH_NAMES, EDGE_HASH_SUFFIXES, HashCache, short_hash,
)
from modules.registry.scan import (
    CHECKPOINT_SUFFIXES, dedupe_names, identify_path, scan_checkpoints, scan_edge, scan_hf_cache,
)

_TITLE = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")


def entry_hash(cache: HashCache, entry: ModelEntry, compute: bool = True) -> str | None:
    """The 10-hex hash of an entry (file sha256, or the folder hash for diffusers/edge folders).

    With ``compute=False`` only cached hashes are used (None if not all are cached)."""
    path = Path(entry.path)
    if path.is_dir():
        if entry.format == ModelFormat.EDGE:
            full = cache.folder_sha256(path, EDGE_HASH_SUFFIXES, EDGE_HASH_NAMES, compute=compute)
        else:
            full = cache.folder_sha256(path, DIFFUSERS_HASH_SUFFIXES, DIFFUSERS_HASH_NAMES, compute=compute)
    elif path.is_file():
        full = cache.full_sha256(path) if compute else cache.cached_sha256(path)
    else:
        return None
    return short_hash(full) if full else None


class ModelRegistry:
    """Lists checkpoints (models/Stable-diffusion, the HF cache, models/edge) and finds one by
    name, A1111 title ``name [hash]``, hash or path. Thread-safe: scans are serialised and readers
    see the previous list while a scan runs."""

    def __init__(self, folders: Folders, hash_cache: HashCache, hf_cache: Path | None = None,
                 allow_pickle: bool = False):
        self.folders = folders
        self.hash_cache = hash_cache
        self.hf_cache = Path(hf_cache) if hf_cache is not None else None
        self.allow_pickle = allow_pickle  # --allow-pickle: .ckpt/.pt/.pth identified with weights_only loads
        self._lock = threading.RLock()  # guards _entries / _scanned
        self._scan_lock = threading.Lock()  # one scan at a time
        self._entries: list[ModelEntry] = []
        self._scanned = False

    # -- scanning -----------------------------------------------------------------------------
    def scan(self, compute_hashes: bool = True) -> list[ModelEntry]:
        """Rescan every source; keep and return the new list. Hashes of supported models are
        computed when ``compute_hashes`` (cached on disk), else filled only from the cache."""
        with self._scan_lock:
            hf_root = self.hf_cache if self.hf_cache is not None else default_hf_cache()
            found = scan_checkpoints(self.folders.checkpoints, self.allow_pickle) + scan_hf_cache(hf_root) \
                + scan_edge(self.folders.edge)
            dedupe_names(found)
            for entry in found:
                entry.hash = entry_hash(self.hash_cache, entry, compute=compute_hashes and entry.supported)
            with self._lock:
                self._entries = found
                self._scanned = True
            return list(found)

    def refresh(self, compute_hashes: bool = True) -> list[ModelEntry]:
        """Same as :meth:`scan` (the hash cache makes it cheap)."""
        return self.scan(compute_hashes=compute_hashes)

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries)

    def ensure_hash(self, entry: ModelEntry) -> str | None:
        """Compute (or read from the cache) the entry's hash and store it on the entry."""
        value = entry_hash(self.hash_cache, entry, compute=True)
        with self._lock:
            entry.hash = value
        return value

    def entry_for_path(self, path: str | os.PathLike) -> ModelEntry:
        """Describe any file or folder, registered or not (not added to the list)."""
        resolved = Path(path).resolve()
        for e in self.entries():
            if Path(e.path).resolve() == resolved:
                return e
        return identify_path(Path(path))

    # -- lookup -------------------------------------------------------------------------------
    def get(self, query: str | os.PathLike) -> ModelEntry:
        """Find a registered model by name, name with extension, A1111 title ``name [hash]``,
        short (10-hex) or full sha256 hash, or path. Scans once if never scanned (without hashing).
        Hash lookups use known (cached) hashes only: a miss never hashes a file.
        Raises ModelNotFound naming close matches."""
        with self._lock:
            scanned = self._scanned
        if not scanned:
            self.scan(compute_hashes=False)
        entries = self.entries()
        text = os.fspath(query).strip() if isinstance(query, (str, os.PathLike)) else ""
        if not text:
            raise ModelNotFound("no model name given")

        found = self._by_name(entries, text)
        if found:
            return found
        m = _TITLE.match(text)
        if m:
            found = self._by_name(entries, m.group("name")) or self._by_hash(entries, m.group("hash"))
            if found:
                return found
        if _HEX.match(text):
            found = self._by_hash(entries, text)
            if found:
                return found
        found = self._by_path(entries, text)
        if found:
            return found
        raise ModelNotFound(self._not_found_message(entries, text))

    @staticmethod
    def _by_name(entries: list[ModelEntry], text: str) -> ModelEntry | None:
        name = text.replace("\\", "/").strip()
        candidates = [name]
        if name.lower().endswith(CHECKPOINT_SUFFIXES):  # A1111 names carry the extension
            candidates.append(name[: name.rfind(".")])
        for cand in candidates:
            exact = [e for e in entries if e.name == cand]
            if exact:  # prefer the file whose extension was given
                return next((e for e in exact if Path(e.path).name.lower().endswith(name[len(cand):].lower())),
                            exact[0])
        for cand in candidates:
            lowered = [e for e in entries if e.name.lower() == cand.lower()]
            if len(lowered) == 1:
                return lowered[0]
            base = [e for e in entries if e.name.rsplit("/", 1)[-1] == cand]  # "file" for "sub/file"
            if len(base) == 1:
                return base[0]
        return None

    def _by_hash(self, entries: list[ModelEntry], text: str) -> ModelEntry | None:
        want = text.lower()
        short = want[:10]

        def matches(e: ModelEntry) -> bool:
            if not e.hash or not (e.hash.startswith(want) if len(want) <= 10 else e.hash == short):
                return False
            if len(want) > 10:  # full sha256: confirm against the cached full hash of a file
                path = Path(e.path)
                full = self.hash_cache.cached_sha256(path) if path.is_file() else None
                return full is None or full.startswith(want)
            return True

        hit = next((e for e in entries if matches(e)), None)
        if hit:
            return hit
        # Hashes cached since the scan (ensure_hash, another registry): read from the cache, never computed,
        # so a lookup that misses costs no file reads however many models there are.
        for e in entries:
            if e.hash is None and e.supported:
                value = entry_hash(self.hash_cache, e, compute=False)
                if value is not None:
                    with self._lock:
                        e.hash = value
                    if matches(e):
                        return e
        return None

    @staticmethod
    def _by_path(entries: list[ModelEntry], text: str) -> ModelEntry | None:
        try:
            candidate = Path(text).expanduser()
            if not candidate.exists():
                return None
            resolved = candidate.resolve()
        except (OSError, ValueError):
            return None
        for e in entries:
            if Path(e.path).resolve() == resolved:
                return e
        return None

    @staticmethod
    def _not_found_message(entries: list[ModelEntry], text: str) -> str:
        names = [e.name for e in entries]
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
        if not close:
            lowered = text.lower()
            close = [n for n in names if lowered in n.lower()][:5]
        msg = f"model not found: {text!r}"
        if close:
            msg += "; did you mean: " + ", ".join(close)
        elif not names:
            msg += " (no models found)"
        return msg
