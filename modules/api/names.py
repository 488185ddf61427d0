"""User-supplied names (models, LoRAs, presets, styles, output files) resolve only inside their folders.

Two layers: :func:`check_name` refuses names that look like paths out (``..``, absolute, ``~``, NUL
and other control characters, over-long); the resolvers then accept only registered entries whose
real path (symlinks followed) lies inside the real folder they were found in. Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from modules.errors import UnsafeName
from modules.lora import LoraInfo, find_lora, lora_folders
from modules.paths import MAX_NAME_LENGTH, safe_child
from modules.registry.entry import ModelEntry

#: image files the outputs endpoint serves
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class UnsafeField(UnsafeName):
    """An unsafe name, with the request field it came from."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def name_problem(name: object) -> str | None:
    """Why ``name`` is not acceptable as a name, or None when it is."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain NUL or other control characters"
    normalized = name.strip().replace("\\", "/")
    if normalized.startswith(("/", "~")) or os.path.isabs(name) or (len(normalized) > 1 and normalized[1] == ":"):
        return "must be a name, not an absolute path"
    if any(part == ".." for part in normalized.split("/")):
        return "must not contain '..'"
    return None


def check_name(field: str, name: str) -> str:
    """``name`` unchanged, or :class:`UnsafeField` naming ``field``."""
    problem = name_problem(name)
    if problem:
        raise UnsafeField(field, problem)
    return name


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether the real ``path`` lies in (or is) one of the real ``roots``."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    for root in roots:
        try:
            real_root = Path(root).resolve()
        except (OSError, RuntimeError):
            continue
        if real == real_root or real_root in real.parents:
            return True
    return False


def model_roots(engine) -> list[Path]:
    """Folders models may come from: models/Stable-diffusion, models/edge, the Hugging Face cache."""
    from modules.registry.scan import default_hf_cache

    folders = engine.folders
    hf = engine.settings.hf_cache if engine.settings.hf_cache is not None else default_hf_cache()
    return [folders.checkpoints, folders.edge, Path(hf)]


def resolve_model(engine, field: str, name: str) -> ModelEntry:
    """The registered model called ``name`` (name, title, hash); refused when it leads outside the
    model folders. Raises ModelNotFound when there is none."""
    check_name(field, name)
    entry = engine.registry.get(name)
    if not inside(Path(entry.path), model_roots(engine)):
        raise UnsafeField(field, f"{entry.name!r} leads outside the model folders")
    return entry


def resolve_lora(engine, field: str, name: str) -> LoraInfo:
    """The LoRA called ``name``; refused when its file lies outside the LoRA folders."""
    check_name(field, name)
    info = find_lora(engine.loras(), name)
    if not inside(Path(info.path), lora_folders(engine.folders, engine.settings.lora_dirs)):
        raise UnsafeField(field, f"LoRA {info.name!r} leads outside the LoRA folders")
    return info


def output_file(outputs_dir: Path, name: str) -> Path:
    """A saved image under the outputs folder (``txt2img/2026-01-02/00001-5.png``)."""
    check_name("name", name)
    try:
        path = safe_child(Path(outputs_dir), name)
    except UnsafeName as exc:
        raise UnsafeField("name", str(exc)) from None
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UnsafeField("name", f"only {', '.join(OUTPUT_SUFFIXES)} files are served")
    return path
