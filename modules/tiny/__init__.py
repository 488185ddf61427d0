"""Tiny seeded random models in the real on-disk formats, built offline (for tests and demos).

``make_tiny_model("sd15", "diffusers", out)`` writes a diffusers folder (``model_index.json``);
``make_tiny_model("sdxl", "single-file", out)`` writes one ``.safetensors`` in the original (A1111/ComfyUI)
layout via :func:`modules.checkpoints.single_file.save_single_file`.

Tiny SD1.5/SDXL text encoders have the real CLIP vocabulary size (49,408 embeddings), so the real CLIP
tokenizer fits them as it fits any A1111 file; the tiny CLIP tokenizer (914 tokens) fits them too. A tiny
SD1.5/SDXL single file carries its tiny tokenizer in its metadata (``visage.tokenizer``: vocab.json and
merges.txt), so it generates right after ``make-tiny-model`` with nothing else on disk, offline; files without
one (a merge of a tiny model, say) take the CLIP tokenizer the loader finds or fetches. Tiny Z-Image single
files are all-in-one (tokenizer included). Importing this package does not import torch.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from modules.checkpoints.single_file import TOKENIZER_KEY
from modules.families import Family
from modules.loader.tokenizers import CLIP_FILES, CLIP_FOLDER_NAME, write_clip_tokenizer
from modules.paths import Folders
from modules.registry.entry import ModelFormat
from modules.tiny.tokenizers import learn_clip_merges, write_tiny_clip_tokenizer

FORMATS = (ModelFormat.DIFFUSERS, ModelFormat.SINGLE_FILE)


def make_tiny_model(family: Family | str, fmt: str, out: Path, seed: int = 0, inpainting: bool = False) -> Path:
    """Write a tiny ``family`` model in format ``fmt`` ("diffusers" | "single-file") to ``out``; return it.

    For "single-file", ``out`` is the file (``.safetensors`` is appended when missing). ``inpainting``
    (SD1.5/SDXL): a dedicated inpainting model (9-channel U-Net; an ``*InpaintPipeline`` folder).
    """
    from modules.checkpoints.single_file import save_single_file
    from modules.tiny.components import tiny_pipeline

    family = Family(family)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    pipe = tiny_pipeline(family, seed, inpainting=inpainting)
    out = Path(out)
    if fmt == ModelFormat.DIFFUSERS:
        pipe.save_pretrained(str(out))
        _write_clip_tokenizer_files(out)
        return out
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    metadata = {"visage.tiny": "true", "visage.seed": str(seed)}
    if family is not Family.ZIMAGE:  # (Z-Image files embed their tokenizer already)
        metadata[TOKENIZER_KEY] = json.dumps(tiny_clip_tokenizer_files())
    return save_single_file(pipe, family, out, metadata)


def tiny_clip_tokenizer_files() -> dict[str, str]:
    """``{vocab.json, merges.txt: text}`` of the tiny CLIP tokenizer (what a tiny single file embeds)."""
    with tempfile.TemporaryDirectory(prefix="visage-tiny-clip-") as tmp:
        folder = write_tiny_clip_tokenizer(Path(tmp) / "tok")
        return {name: (folder / name).read_text(encoding="utf-8") for name in CLIP_FILES}


def _write_clip_tokenizer_files(folder: Path) -> None:
    """Give tokenizer*/ the files real SD repositories have (vocab.json, merges.txt, configs), not tokenizer.json."""
    merges = None
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        config = folder / name / "tokenizer_config.json"
        if config.is_file() and '"CLIPTokenizer"' in config.read_text(encoding="utf-8"):
            merges = merges or learn_clip_merges()
            write_clip_tokenizer(merges, folder / name, pad_token=pad)


def install_tiny_clip_tokenizer(folders: Folders) -> Path:
    """Put the tiny CLIP tokenizer where the loader looks first (``models/tokenizers/clip-vit-large-patch14``).
    Tests only: a real model would then get the tiny tokenizer too (the loader cannot tell, as both fit)."""
    return write_tiny_clip_tokenizer(folders.tokenizers / CLIP_FOLDER_NAME)
