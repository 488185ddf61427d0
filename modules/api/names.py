"""Names at the HTTP edge: saved images served only from the outputs folder. The model, LoRA, preset and
style rules are the engine's (:mod:`modules.names`, ``Engine.model``, ``Engine.prepare``). Torch-free.
"""
from __future__ import annotations

from pathlib import Path

from modules.errors import UnsafeName
from modules.messages import Message
from modules.names import UnsafeField, check_name
from modules.paths import safe_child

#: image files the outputs endpoint serves
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def output_file(outputs_dir: Path, name: str) -> Path:
    """A saved image under the outputs folder (``txt2img/2026-01-02/00001-5.png``)."""
    check_name("name", name)
    try:
        path = safe_child(Path(outputs_dir), name)
    except UnsafeName as exc:
        raise UnsafeField("name", str(exc)) from None
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UnsafeField("name", Message("rule.served_suffixes", suffixes=", ".join(OUTPUT_SUFFIXES)))
    return path
