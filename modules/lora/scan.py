"""Find LoRA files (models/Lora and extra folders), describe them, hash them. Torch-free.

Names follow A1111: a LoRA is called by its file name without suffix (``<lora:NAME:w>``), whatever
sub-folder it is in; ``rel_name`` keeps the sub-folder for display. When two files share a name the
first one found keeps it and the others are reachable by ``rel_name``.

Hashes (computed on demand, never during a scan):

* ``hash``: what A1111 writes as "Lora hashes": the first 12 hex digits of the *addnet* hash, i.e. the
  sha256 of the safetensors data section (the bytes after the 8-byte length and the JSON header). It
  does not change when only the metadata is edited. For non-safetensors files it is the file sha256.
* ``sha256``: the full-file sha256 (Civitai's AutoV2 is its first 10 digits), from the registry's
  ``HashCache`` when one is given, so it is computed once per file and remembered on disk.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modules.checkpoints.header import data_start
from modules.errors import ModelNotFound
from modules.lora.formats import LoraInfo, inspect_lora, with_hashes

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".pth")
CHUNK_BYTES = 1 << 20
A1111_SHORT_LEN = 12


@dataclass(frozen=True)
class LoraHashes:
    sha256: str
    addnet_sha256: str

    @property
    def short(self) -> str:
        """A1111's "Lora hashes" value."""
        return self.addnet_sha256[:A1111_SHORT_LEN]


def _iter_files(root: Path) -> Iterable[Path]:
    try:
        from modules.registry.scan import iter_tree
    except ImportError:  # registry not available: a plain sorted walk
        iter_tree = None
    if iter_tree is not None:
        yield from iter_tree(root, LORA_SUFFIXES)
        return
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(LORA_SUFFIXES):
                yield Path(dirpath) / fn


def scan_loras(roots: Sequence[str | os.PathLike]) -> list[LoraInfo]:
    """Describe every LoRA file under ``roots`` (in order; missing folders are skipped). Headers only."""
    found: list[LoraInfo] = []
    seen_paths: set[str] = set()
    taken: set[str] = set()
    for root in roots:
        root = Path(root)
        for path in _iter_files(root):
            real = os.path.realpath(path)
            if real in seen_paths:
                continue
            seen_paths.add(real)
            rel = path.relative_to(root).with_suffix("").as_posix()
            info = inspect_lora(path, name=path.stem, rel_name=rel)
            if info.name in taken:
                log.info("LoRA name %r is taken; %s is reachable as %r", info.name, path, rel)
                info.name = rel if rel not in taken else f"{rel} ({len(found)})"
            taken.add(info.name)
            found.append(info)
    return found


def find_lora(loras: Sequence[LoraInfo], name: str) -> LoraInfo:
    """Find a LoRA by name, relative name, kohya alias or short hash (then case-insensitively)."""
    wanted = name.strip().replace("\\", "/")
    for pick in (lambda i: i.name == wanted, lambda i: i.rel_name == wanted, lambda i: i.alias == wanted,
                 lambda i: bool(i.hash) and i.hash == wanted.lower()):
        for info in loras:
            if pick(info):
                return info
    low = wanted.lower()
    for info in loras:
        if low in (info.name.lower(), info.rel_name.lower(), (info.alias or "").lower()):
            return info
    raise ModelNotFound(f"LoRA '{name}' not found in the LoRA folders")


def addnet_sha256(path: str | os.PathLike) -> str:
    """sha256 of a safetensors file's data section (A1111's LoRA hash); of the whole file otherwise."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if str(path).lower().endswith(".safetensors"):
            f.seek(data_start(f))
        while True:
            chunk = f.read(CHUNK_BYTES)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def lora_hashes(path: str | os.PathLike, cache=None) -> LoraHashes:
    """Both hashes of a LoRA file. ``cache`` is a ``modules.registry.hashing.HashCache`` (optional):
    the full sha256 comes from it (computed once, remembered on disk)."""
    addnet = addnet_sha256(path)
    if cache is not None:
        sha = cache.full_sha256(path)
    elif not str(path).lower().endswith(".safetensors"):
        sha = addnet
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK_BYTES)
                if not chunk:
                    break
                h.update(chunk)
        sha = h.hexdigest()
    return LoraHashes(sha256=sha, addnet_sha256=addnet)


def ensure_hashes(info: LoraInfo, cache=None) -> LoraInfo:
    """``info`` with ``hash``/``sha256`` filled in (a copy; unchanged if already there)."""
    if info.hash and info.addnet_sha256 and info.sha256:
        return info
    hashes = lora_hashes(info.path, cache)
    return with_hashes(info, hashes.sha256, hashes.addnet_sha256)


def lora_folders(folders, extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """models/Lora (A1111 name) followed by any extra folders, without duplicates."""
    out: list[Path] = []
    for p in [folders.lora, *map(Path, extra)]:
        if all(os.path.realpath(p) != os.path.realpath(q) for q in out):
            out.append(Path(p))
    return out
