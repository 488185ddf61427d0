"""The Hugging Face hub cache on disk: ``models--ORG--NAME/snapshots/<revision>/``. Torch-free, offline.

One snapshot rule for the whole project: the revision ``refs/main`` names comes first, then the others,
newest first. Callers take the first snapshot that holds what they need.
"""
from __future__ import annotations

from pathlib import Path

REPO_FOLDER_PREFIX = "models--"


def default_hf_cache() -> Path:
    """huggingface_hub's cache folder (honours HF_HUB_CACHE / HF_HOME). Imported lazily."""
    from huggingface_hub import constants  # torch-free

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, hf_cache: Path | None = None) -> Path:
    """Where ``repo_id`` lives in the cache (whether or not it is there)."""
    return (hf_cache or default_hf_cache()) / (REPO_FOLDER_PREFIX + repo_id.replace("/", "--"))


def repo_id_of(folder: Path) -> str:
    """``org/name`` of a ``models--org--name`` folder."""
    return folder.name[len(REPO_FOLDER_PREFIX):].replace("--", "/")


def cached_repo_folders(hf_cache: Path) -> list[Path]:
    """The model repo folders in the cache, sorted by name."""
    if not hf_cache.is_dir():
        return []
    return [d for d in sorted(hf_cache.glob(REPO_FOLDER_PREFIX + "*")) if d.is_dir()]


def _main_revision(folder: Path) -> str:
    ref = folder / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except OSError:
        return ""


def snapshots(folder: Path) -> list[Path]:
    """Snapshot folders of one repo folder: ``refs/main``'s first, then newest first."""
    root = folder / "snapshots"
    if not root.is_dir():
        return []
    main = _main_revision(folder)
    found = [s for s in root.iterdir() if s.is_dir()]
    found.sort(key=lambda s: (s.stat().st_mtime_ns, s.name), reverse=True)
    return sorted(found, key=lambda s: s.name != main)


def repo_snapshots(repo_id: str, hf_cache: Path | None = None) -> list[Path]:
    """Snapshot folders of ``repo_id`` in the cache (see :func:`snapshots` for the order)."""
    return snapshots(repo_folder(repo_id, hf_cache))
