"""Tiny-model fixtures shared by the loader tests (import them into a test module, or from conftest.py).

``tiny_folders``: a private ``models/`` tree with the tiny CLIP tokenizer installed where the loader looks.
``tiny_models(family, fmt, seed=0)``: path of a tiny model written into it (built once per session).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modules.families import Family
from modules.paths import Folders
from modules.registry.entry import ModelEntry


def entry_for(path: Path, family: Family | str, fmt: str) -> ModelEntry:
    """A registry entry for a model file/folder (what the registry would produce)."""
    return ModelEntry(name=Path(path).stem, path=Path(path), format=fmt, family=Family(family))


def make_folders(root: Path) -> Folders:
    folders = Folders(models=root / "models", outputs=root / "outputs", cache=root / "cache")
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    return folders


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> Folders:
    from modules.tiny import install_tiny_clip_tokenizer

    folders = make_folders(tmp_path_factory.mktemp("tiny-models"))
    install_tiny_clip_tokenizer(folders)
    return folders


@pytest.fixture(scope="session")
def tiny_models(tiny_folders):
    """``get(family, fmt, seed=0) -> Path``: tiny models under ``tiny_folders.checkpoints``, cached."""
    from modules.tiny import make_tiny_model

    made: dict[tuple, Path] = {}

    def get(family: Family | str, fmt: str, seed: int = 0) -> Path:
        key = (Family(family), fmt, seed)
        if key not in made:
            out = tiny_folders.checkpoints / f"tiny-{key[0].value}-{fmt}-{seed}"
            made[key] = make_tiny_model(key[0], fmt, out, seed=seed)
        return made[key]

    return get
