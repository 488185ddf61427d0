"""Find model files and folders on disk and describe each as a ModelEntry. Torch-free.

The helpers here (``iter_tree``, ``relative_name``, ``dedupe_names``, ``identify_path``) are
generic so that other scanners (LoRA, VAE) can reuse them.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from modules.checkpoints.header import SafetensorsHeaderError, read_header
from modules.checkpoints.hf_cache import cached_repo_folders, repo_id_of, snapshots
from modules.registry.entry import ModelEntry, ModelFormat
from modules.registry.hashing import DIFFUSERS_HASH_NAMES, DIFFUSERS_HASH_SUFFIXES, folder_hash_files
from modules.registry.identify import (
    GGUF_REASON, PICKLE_REASON, Identification, identify_diffusers, identify_edge_manifest, identify_keys,
    unsupported, UNKNOWN,
)

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
#: other suffixes that are listed (never loaded) with a reason
OTHER_SUFFIXES = {".gguf": GGUF_REASON}
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + tuple(OTHER_SUFFIXES)
MODEL_INDEX = "model_index.json"
EDGE_MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------------------------
# generic helpers
# ---------------------------------------------------------------------------------------------

def is_diffusers_folder(path: Path) -> bool:
    return (path / MODEL_INDEX).is_file()


def iter_tree(root: Path, suffixes: tuple[str, ...],
              is_package: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield files under ``root`` whose name ends with one of ``suffixes`` (case-insensitive), and
    directories for which ``is_package`` is true (not descended into). Sorted, hidden entries
    skipped, symlinked directories followed once (no loops). Nothing if ``root`` is missing."""
    if not root.is_dir():
        return
    seen: set[str] = set()
    lowered = tuple(s.lower() for s in suffixes)

    def walk(directory: Path) -> Iterator[Path]:
        real = os.path.realpath(directory)
        if real in seen:
            return
        seen.add(real)
        try:
            children = sorted(directory.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", directory, exc)
            return
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if is_package is not None and is_package(child):
                    yield child
                else:
                    yield from walk(child)
            elif child.is_file() and child.name.lower().endswith(lowered):
                yield child

    if is_package is not None and is_package(root):
        yield root
        return
    yield from walk(root)


def relative_name(root: Path, path: Path, strip_suffix: bool = True) -> str:
    """``path`` relative to ``root`` as a posix string; the file suffix removed when asked."""
    rel = path.relative_to(root)
    if strip_suffix and path.suffix and not path.is_dir():
        rel = rel.with_suffix("")
    name = rel.as_posix()
    return path.name if name in ("", ".") else name


def dedupe_names(entries: list[ModelEntry]) -> list[ModelEntry]:
    """Make names unique, in place. Per clash the first supported entry (else the first) keeps the
    name; the others get their file suffix, else `` (source)``, else a number appended."""
    groups: dict[str, list[ModelEntry]] = {}
    for e in entries:
        groups.setdefault(e.name, []).append(e)
    taken = set(groups)
    for name, group in groups.items():
        if len(group) < 2:
            continue
        keeper = next((e for e in group if e.supported), group[0])
        for e in group:
            if e is keeper:
                continue
            candidates = []
            if e.path.suffix and not e.path.is_dir():
                candidates.append(name + e.path.suffix)
            candidates.append(f"{name} ({e.source})")
            new = next((c for c in candidates if c not in taken), None)
            n = 2
            while new is None:
                new = f"{name} ({n})" if f"{name} ({n})" not in taken else None
                n += 1
            e.details.setdefault("original_name", name)
            e.name = new
            taken.add(new)
    return entries


def _entry(name: str, path: Path, fmt: str, ident: Identification, size: int, source: str) -> ModelEntry:
    details = dict(ident.details)
    details["kind"] = ident.kind
    return ModelEntry(name=name, path=path, format=fmt, family=ident.family, supported=ident.supported,
                      reason=ident.reason, size_bytes=size, source=source, details=details)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_json(path: Path) -> object:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# one file or folder -> ModelEntry
# ---------------------------------------------------------------------------------------------

def identify_pickle(path: Path) -> Identification:
    """Identify a pickle checkpoint from its tensor names and shapes (``--allow-pickle`` only).

    Read with ``torch.load(weights_only=True)`` onto the meta device: only tensors and plain
    containers are accepted, no code runs, no weights are read. Imports torch (lazily)."""
    import pickle

    import torch

    try:
        try:
            state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="meta", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return unsupported(f"refused: not a plain tensor file for torch.load(weights_only=True) ({first})",
                           kind=UNKNOWN)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return unsupported("pickle file does not hold a state dict", kind=UNKNOWN)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(k, str) and hasattr(v, "shape")}
    ident = identify_keys(shapes)
    ident.details["pickle_opt_in"] = True
    return ident


def entry_for_file(path: Path, name: str, source: str = "models", allow_pickle: bool = False) -> ModelEntry:
    """Describe one checkpoint file (safetensors read by header only; pickles never opened, unless
    ``allow_pickle``, and then only with ``torch.load(weights_only=True)``)."""
    suffix = path.suffix.lower()
    size = _file_size(path)
    if allow_pickle and suffix in PICKLE_SUFFIXES:
        return _entry(name, path, ModelFormat.PICKLE, identify_pickle(path), size, source)
    if suffix in PICKLE_SUFFIXES or suffix == ".bin":
        return _entry(name, path, ModelFormat.PICKLE, unsupported(PICKLE_REASON), size, source)
    if suffix in OTHER_SUFFIXES:
        return _entry(name, path, ModelFormat.SINGLE_FILE, unsupported(OTHER_SUFFIXES[suffix], kind=UNKNOWN),
                      size, source)
    if suffix not in SAFETENSORS_SUFFIXES:
        reason = f"not a model file Visage reads ({suffix or 'no extension'}; expected .safetensors)"
        return _entry(name, path, ModelFormat.SINGLE_FILE, unsupported(reason, kind=UNKNOWN), size, source)
    try:
        header = read_header(path)
    except SafetensorsHeaderError as exc:
        ident = unsupported(f"unreadable safetensors file: {exc}", kind=UNKNOWN)
    else:
        ident = identify_keys(header.shapes(), header.metadata,
                              {k: t.dtype for k, t in header.tensors.items()})
    return _entry(name, path, ModelFormat.SINGLE_FILE, ident, size, source)


def _folder_size(folder: Path) -> int:
    return sum(_file_size(f) for f in folder_hash_files(folder, DIFFUSERS_HASH_SUFFIXES, DIFFUSERS_HASH_NAMES))


def entry_for_diffusers_folder(path: Path, name: str, source: str = "models") -> ModelEntry:
    """Describe a diffusers folder from model_index.json and the unet/transformer config.json."""
    try:
        index = _read_json(path / MODEL_INDEX)
    except (OSError, ValueError) as exc:
        ident = unsupported(f"model_index.json is unreadable ({type(exc).__name__})", kind=UNKNOWN)
        return _entry(name, path, ModelFormat.DIFFUSERS, ident, _folder_size(path), source)
    if not isinstance(index, dict):
        ident = unsupported("model_index.json is not a JSON object", kind=UNKNOWN)
        return _entry(name, path, ModelFormat.DIFFUSERS, ident, _folder_size(path), source)
    configs = {}
    for component in ("unet", "transformer"):
        cfg_path = path / component / "config.json"
        if cfg_path.is_file():
            try:
                cfg = _read_json(cfg_path)
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict):
                configs[component] = cfg
    present = [p.name for p in path.iterdir() if p.is_dir()]
    ident = identify_diffusers(index, configs, present)
    return _entry(name, path, ModelFormat.DIFFUSERS, ident, _folder_size(path), source)


def entry_for_edge(path: Path, name: str) -> ModelEntry:
    """Describe an edge package folder (models/edge/NAME with manifest.json)."""
    try:
        ident = identify_edge_manifest(_read_json(path / EDGE_MANIFEST))
    except (OSError, ValueError) as exc:
        ident = unsupported(f"manifest.json is unreadable ({type(exc).__name__})", kind=UNKNOWN)
    size = sum(_file_size(f) for f in path.rglob("*") if f.is_file())
    return _entry(name, path, ModelFormat.EDGE, ident, size, "edge")


def identify_path(path: Path, name: str | None = None, source: str = "models") -> ModelEntry:
    """Describe any file or folder (inside the model folders or not); never loads weights."""
    path = Path(path)
    if path.is_dir():
        if is_diffusers_folder(path):
            return entry_for_diffusers_folder(path, name or path.name, source)
        if (path / EDGE_MANIFEST).is_file():
            return entry_for_edge(path, name or path.name)
        return _entry(name or path.name, path, ModelFormat.DIFFUSERS,
                      unsupported("folder has no model_index.json", kind=UNKNOWN), 0, source)
    if not path.is_file():
        return _entry(name or path.name, path, ModelFormat.SINGLE_FILE,
                      unsupported("file not found", kind=UNKNOWN), 0, source)
    return entry_for_file(path, name or path.stem, source)


# ---------------------------------------------------------------------------------------------
# whole sources
# ---------------------------------------------------------------------------------------------

def scan_checkpoints(root: Path, allow_pickle: bool = False) -> list[ModelEntry]:
    """models/Stable-diffusion: single files (any depth) and diffusers folders (not descended into)."""
    entries = []
    for path in iter_tree(root, CHECKPOINT_SUFFIXES, is_package=is_diffusers_folder):
        name = relative_name(root, path)
        if path.is_dir():
            entries.append(entry_for_diffusers_folder(path, name))
        else:
            entries.append(entry_for_file(path, name, allow_pickle=allow_pickle))
    return entries


def _pick_snapshot(repo_dir: Path) -> Path | None:
    return next((s for s in snapshots(repo_dir) if is_diffusers_folder(s)), None)


def scan_hf_cache(cache_dir: Path) -> list[ModelEntry]:
    """Diffusers repos in a Hugging Face hub cache (``models--org--name/snapshots/<rev>/model_index.json``).

    Reads the folder layout only: no network, no huggingface_hub API calls."""
    entries = []
    for repo_dir in cached_repo_folders(cache_dir):
        snapshot = _pick_snapshot(repo_dir)
        if snapshot is None:
            continue
        entry = entry_for_diffusers_folder(snapshot, repo_id_of(repo_dir), source="hf-cache")
        entry.details["revision"] = snapshot.name
        entries.append(entry)
    return entries


def scan_edge(root: Path) -> list[ModelEntry]:
    """models/edge/NAME/manifest.json packages, named ``edge/NAME``."""
    if not root.is_dir():
        return []
    return [entry_for_edge(d, f"edge/{d.name}") for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and (d / EDGE_MANIFEST).is_file()]
