"""Tiny seeded random models in the real on-disk formats, built offline (for tests and demos).

``make_tiny_model("sd15", "diffusers", out)`` writes a diffusers folder (``model_index.json``);
``make_tiny_model("sdxl", "single-file", out)`` writes one ``.safetensors`` in the original (A1111/ComfyUI)
layout via :func:`modules.checkpoints.single_file.save_single_file`.

Tiny SD1.5/SDXL single files carry no tokenizer (like real A1111 files): the loader looks for the CLIP
tokenizer in ``models/tokenizers/clip-vit-large-patch14``; tests put the tiny one there with
:func:`install_tiny_clip_tokenizer`. Tiny Z-Image single files are all-in-one (tokenizer included).
Importing this package does not import torch.
"""
from __future__ import annotations

from pathlib import Path

from modules.families import Family
from modules.loader.tokenizers import CLIP_FOLDER_NAME, write_clip_tokenizer
from modules.paths import Folders
from modules.registry.entry import ModelFormat
from modules.tiny.tokenizers import learn_clip_merges, write_tiny_clip_tokenizer

FORMATS = (ModelFormat.DIFFUSERS, ModelFormat.SINGLE_FILE)


def make_tiny_model(family: Family | str, fmt: str, out: Path, seed: int = 0) -> Path:
    """Write a tiny ``family`` model in format ``fmt`` ("diffusers" | "single-file") to ``out``; return it.

    For "single-file", ``out`` is the file (``.safetensors`` is appended when missing).
    """
    from modules.checkpoints.single_file import save_single_file
    from modules.tiny.components import tiny_pipeline

    family = Family(family)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    pipe = tiny_pipeline(family, seed)
    out = Path(out)
    if fmt == ModelFormat.DIFFUSERS:
        pipe.save_pretrained(str(out))
        _write_clip_tokenizer_files(out)
        return out
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    return save_single_file(pipe, family, out, {"visage.tiny": "true", "visage.seed": str(seed)})


def _write_clip_tokenizer_files(folder: Path) -> None:
    """Give tokenizer*/ the files real SD repositories have (vocab.json, merges.txt, configs), not tokenizer.json."""
    merges = None
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        config = folder / name / "tokenizer_config.json"
        if config.is_file() and '"CLIPTokenizer"' in config.read_text(encoding="utf-8"):
            merges = merges or learn_clip_merges()
            write_clip_tokenizer(merges, folder / name, pad_token=pad)


def install_tiny_clip_tokenizer(folders: Folders) -> Path:
    """Put the tiny CLIP tokenizer where the loader looks first (``models/tokenizers/clip-vit-large-patch14``)."""
    return write_tiny_clip_tokenizer(folders.tokenizers / CLIP_FOLDER_NAME)
