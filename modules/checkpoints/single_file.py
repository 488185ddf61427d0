"""Visage's single-file checkpoints: the metadata it adds, and saving a diffusers pipeline as one file.

Layouts written by :func:`save_single_file` are those of :mod:`modules.checkpoints.layouts` (what
``from_single_file``, A1111 and ComfyUI read). A plain Z-Image DiT file has only the DiT group.

Metadata added to every file Visage writes (A1111 files from elsewhere have none of it):
``visage.family``, ``visage.configs`` (JSON ``{component: diffusers/transformers config}`` so non-standard
shapes, e.g. tiny test models, rebuild exactly) and, for zimage, ``visage.tokenizer`` (JSON
``{file name: text}`` of the tokenizer folder, so an all-in-one file needs no companion folder).

Torch-free at import (safetensors is imported inside :func:`save_single_file`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from modules.checkpoints.convert import CONVERTERS
from modules.checkpoints.layouts import LAYOUTS
from modules.families import Family

CONFIGS_KEY = "visage.configs"
FAMILY_KEY = "visage.family"
TOKENIZER_KEY = "visage.tokenizer"


def embedded_configs(metadata: dict[str, str]) -> dict[str, dict]:
    """``{component: config}`` from Visage's own files; empty for files from elsewhere."""
    return json.loads(metadata[CONFIGS_KEY]) if CONFIGS_KEY in metadata else {}


def _config_dict(component) -> dict:
    """A diffusers model's or a transformers model's config as plain JSON data."""
    source = component if hasattr(component, "to_json_string") else component.config
    return json.loads(source.to_json_string())


def _tokenizer_files(tokenizer) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="visage-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def pipeline_to_original(pipe, family: Family | str, components=None) -> tuple[dict, dict[str, dict]]:
    """(tensors in the original single-file layout, {component: config}) of a diffusers pipeline.

    ``components`` limits the output to some of the family's components (default: all of them).
    """
    tensors, configs = {}, {}
    for name, (prefix, kind) in LAYOUTS[Family(family)].items():
        if components is not None and name not in components:
            continue
        component = getattr(pipe, name)
        configs[name] = _config_dict(component)
        for key, value in CONVERTERS[kind](component.state_dict(), configs[name]).items():
            tensors[prefix + key] = value.detach().to("cpu").contiguous()
    return tensors, configs


def save_single_file(pipe, family: Family | str, path: Path, metadata: dict[str, str] | None = None, *,
                     components=None) -> Path:
    """Write ``pipe`` to one ``.safetensors`` in the original layout (see module docstring). Atomic.

    ``components`` (e.g. ``("transformer",)`` for a Z-Image DiT-only file) limits what is written.
    """
    from safetensors.torch import save_file

    family = Family(family)
    path = Path(path)
    tensors, configs = pipeline_to_original(pipe, family, components)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({"format": "pt", FAMILY_KEY: family.value, CONFIGS_KEY: json.dumps(configs)})
    if family is Family.ZIMAGE and "text_encoder" in configs:
        meta[TOKENIZER_KEY] = json.dumps(_tokenizer_files(pipe.tokenizer))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
