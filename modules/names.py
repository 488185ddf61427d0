"""User-supplied names (models, LoRAs, presets, styles, output files) resolve only inside their folders.

Two layers: :func:`check_name` refuses names that look like paths out (``..``, absolute, ``~``, NUL
and other control characters, over-long); the engine's resolvers then accept only registered entries whose
real path (symlinks followed) lies :func:`inside` the real folder they were found in. The page, the API
and the CLI all go through them (``Engine.model``, ``Engine.prepare``). Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from modules.errors import UnsafeName
from modules.paths import MAX_NAME_LENGTH


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
