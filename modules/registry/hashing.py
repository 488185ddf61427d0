"""Model hashes, computed once and cached on disk. Torch-free.

* File hash: sha256 of the file's bytes; the A1111 "Model hash" is its first 10 hex digits.
* Folder hash (diffusers folders, edge packages): sha256 of the UTF-8 text made of one line
  ``<relative/posix/path> <sha256 of that file>\\n`` per hashed file, lines sorted by path.
  Hashed files: every ``*.safetensors`` and ``*.bin`` below the folder plus ``model_index.json``
  (``*.onnx``, ``*.data`` and ``manifest.json`` for edge packages). Only the per-file hashes are
  cached; the folder hash is recomputed from them (cheap).

The cache is a JSON file keyed by absolute (resolved) path; an entry is used only while the
file's size and mtime_ns are unchanged. It is written atomically (temp file + os.replace);
a corrupt or unwritable cache is ignored with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # 1 MiB
SHORT_HASH_LEN = 10
CACHE_VERSION = 1

#: which files of a diffusers folder take part in its hash
DIFFUSERS_HASH_SUFFIXES = (".safetensors", ".bin")
DIFFUSERS_HASH_NAMES = ("model_index.json",)
#: which files of an edge package take part in its hash
EDGE_HASH_SUFFIXES = (".onnx", ".data", ".safetensors", ".bin")
EDGE_HASH_NAMES = ("manifest.json",)


def sha256_file(path: str | os.PathLike) -> str:
    """Stream ``path`` through sha256 in 1 MiB chunks; return the hex digest."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def short_hash(sha256_hex: str) -> str:
    """A1111's "Model hash": the first 10 hex digits of the sha256."""
    return sha256_hex[:SHORT_HASH_LEN]


def folder_hash_files(folder: Path, suffixes: tuple[str, ...] = DIFFUSERS_HASH_SUFFIXES,
                      names: tuple[str, ...] = DIFFUSERS_HASH_NAMES) -> list[Path]:
    """The files of ``folder`` that its hash covers, sorted by relative posix path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.endswith(suffixes) or fn in names:
                found.append(Path(dirpath) / fn)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def combine_folder_hash(items: list[tuple[str, str]]) -> str:
    """sha256 over the sorted ``(relative path, file sha256)`` pairs, one ``path sha\\n`` line each."""
    text = "".join(f"{rel} {sha}\n" for rel, sha in sorted(items))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class HashCache:
    """sha256 of model files, cached on disk. Thread-safe; the file is read on first use."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._files: dict[str, dict] | None = None

    # -- cache file ---------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        if self._files is not None:
            return self._files
        files: dict[str, dict] = {}
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            log.warning("hash cache %s is unreadable (%s); starting empty", self.path, exc)
            raw = None
        if raw is not None:
            try:
                doc = json.loads(raw)
                entries = doc["files"] if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION else None
                if not isinstance(entries, dict):
                    raise ValueError("unexpected layout")
                for key, rec in entries.items():
                    if (isinstance(rec, dict) and isinstance(rec.get("size"), int)
                            and isinstance(rec.get("mtime_ns"), int) and isinstance(rec.get("sha256"), str)
                            and len(rec["sha256"]) == 64):
                        files[key] = rec
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("hash cache %s is corrupt (%s); ignoring it", self.path, exc)
                files = {}
        self._files = files
        return files

    def _save(self) -> None:
        doc = {"version": CACHE_VERSION, "files": self._files or {}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            log.warning("cannot write hash cache %s (%s); hashes stay in memory", self.path, exc)

    # -- file hashes --------------------------------------------------------------------------
    @staticmethod
    def _key_and_stat(path: Path) -> tuple[str, int, int]:
        real = Path(os.path.realpath(path))
        st = real.stat()
        return str(real), st.st_size, st.st_mtime_ns

    def cached_sha256(self, path: str | os.PathLike) -> str | None:
        """The cached full sha256 of ``path`` if still valid; never reads the file's contents."""
        try:
            key, size, mtime = self._key_and_stat(Path(path))
        except OSError:
            return None
        with self._lock:
            rec = self._load().get(key)
        if rec and rec["size"] == size and rec["mtime_ns"] == mtime:
            return rec["sha256"]
        return None

    def full_sha256(self, path: str | os.PathLike) -> str:
        """Full sha256 hex of a file: from the cache, or computed once and cached."""
        key, size, mtime = self._key_and_stat(Path(path))
        cached = self.cached_sha256(path)
        if cached:
            return cached
        digest = sha256_file(key)
        with self._lock:
            self._load()[key] = {"size": size, "mtime_ns": mtime, "sha256": digest}
            self._save()
        return digest

    def model_hash(self, path: str | os.PathLike) -> str:
        """A1111 "Model hash" of a file (first 10 hex of its sha256)."""
        return short_hash(self.full_sha256(path))

    # -- folder hashes ------------------------------------------------------------------------
    def folder_sha256(self, folder: str | os.PathLike, suffixes: tuple[str, ...] = DIFFUSERS_HASH_SUFFIXES,
                      names: tuple[str, ...] = DIFFUSERS_HASH_NAMES, *, compute: bool = True) -> str | None:
        """Folder hash (see module docstring). With ``compute=False`` only cached file hashes are
        used and None is returned if any is missing."""
        folder = Path(folder)
        items = []
        for f in folder_hash_files(folder, suffixes, names):
            sha = self.full_sha256(f) if compute else self.cached_sha256(f)
            if sha is None:
                return None
            items.append((f.relative_to(folder).as_posix(), sha))
        return combine_folder_hash(items)
