"""Browse saved outputs by date and move unwanted ones to a trash folder. Torch-free.

Layout read (what :mod:`modules.outputs.saving` writes): ``<outputs>/<kind>/YYYY-MM-DD/NNNNN-SEED.png``,
``kind`` being ``txt2img`` today. Names handed out and taken back are relative to ``<outputs>``
(``txt2img/2026-11-22/00003-42.png``) and are resolved with :func:`modules.paths.safe_child`, so nothing
outside the outputs folder can be read or moved.

Nothing is ever deleted: :func:`move_to_trash` moves a file to ``<outputs>/trash/YYYY-MM-DD/`` keeping its
name (``NAME (2).png`` when the trash already holds one of that name).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modules.errors import InvalidRequest, VisageError
from modules.outputs.saving import read_png_parameters
from modules.paths import safe_child

TRASH = "trash"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class HistoryImage:
    """One saved image: ``name`` relative to the outputs folder, its absolute ``path`` and infotext."""

    name: str
    path: Path
    kind: str
    date: str
    infotext: str | None


def _kinds(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name != TRASH and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def list_dates(root: Path) -> list[str]:
    """Dates (``YYYY-MM-DD``) that have at least one image, newest first, over every kind but the trash."""
    dates: set[str] = set()
    for kind in _kinds(Path(root)):
        for day in kind.iterdir():
            if day.is_dir() and _DATE_RE.match(day.name) and any(_is_image(p) for p in day.iterdir()):
                dates.add(day.name)
    return sorted(dates, reverse=True)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _infotext(path: Path) -> str | None:
    try:
        return read_png_parameters(path)
    except VisageError:  # a damaged or foreign file is still listed, without infotext
        return None


def list_images(root: Path, date: str, *, with_infotext: bool = True) -> list[HistoryImage]:
    """The images saved on ``date`` (every kind), newest first (by modification time, then name)."""
    if not isinstance(date, str) or not _DATE_RE.match(date):
        raise InvalidRequest("date", f"must look like YYYY-MM-DD, not {date!r}")
    root = Path(root)
    found: list[tuple[float, str, Path, str]] = []
    for kind in _kinds(root):
        day = kind / date
        if not day.is_dir():
            continue
        for path in day.iterdir():
            if _is_image(path):
                found.append((path.stat().st_mtime, path.name, path, kind.name))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [HistoryImage(name=f"{kind}/{date}/{path.name}", path=path, kind=kind, date=date,
                         infotext=_infotext(path) if with_infotext else None)
            for _mtime, _name, path, kind in found]


def resolve_image(root: Path, name: str) -> Path:
    """The file for a name from :func:`list_images`; refuses anything outside ``<root>/<kind>/<date>/``,
    the trash, and files that are not images."""
    path = safe_child(Path(root), name)
    parts = Path(name.replace("\\", "/")).parts
    if len(parts) != 3 or parts[0] == TRASH or not _DATE_RE.match(parts[1]):
        raise InvalidRequest("image", f"{name!r} is not an output image name (KIND/YYYY-MM-DD/FILE)")
    if not _is_image(path):
        raise InvalidRequest("image", f"no such output image: {name}")
    return path


def trash_path(root: Path, date: str, filename: str) -> Path:
    """Where a file named ``filename`` from ``date`` goes in the trash (never over an existing file)."""
    folder = Path(root) / TRASH / date
    target = folder / filename
    stem, suffix = os.path.splitext(filename)
    n = 2
    while target.exists():
        target = folder / f"{stem} ({n}){suffix}"
        n += 1
    return target


def move_to_trash(root: Path, name: str) -> Path:
    """Move the output image ``name`` to ``<root>/trash/<date>/`` (same file name); returns the new path."""
    path = resolve_image(root, name)
    date = Path(name.replace("\\", "/")).parts[1]
    target = trash_path(root, date, path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)  # same file system: a rename, never a copy-and-delete
    return target
