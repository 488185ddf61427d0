"""The one way command-line flags become :class:`modules.settings.Settings` (``python -m modules.cli`` and
webui.py alike), and the flag groups the commands share. Torch-free.

:func:`settings_from_args` reads every Settings field the parsed flags have (same ``dest`` name); a
flag that is absent or None keeps the Settings default. Paths are expanded and resolved, counts clamped.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from modules.settings import REPO_ROOT, Settings

#: fields holding one path, expanded and resolved
PATH_FIELDS = frozenset({"models_dir", "outputs_dir", "cache_dir", "presets_dir", "styles_file", "hf_cache",
                         "config_file", "extensions_dir", "extensions_config"})
#: fields holding credentials: ``user:pass[,user:pass]`` or a file of such lines
AUTH_FIELDS = frozenset({"auth", "api_auth"})
#: counts and their lowest value
AT_LEAST = {"ckpt_cache": 0, "embed_cache_mb": 0, "max_queue": 1, "onnx_threads": 0, "preview_every": 0}


def settings_from_args(args: argparse.Namespace, **overrides) -> Settings:
    """Settings from parsed flags (``--listen`` binds all interfaces, ``--nowebui`` implies the API);
    ``overrides``: fields a command fixes itself (they win over flags)."""
    values = {}
    for f in dataclasses.fields(Settings):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = _convert(f.name, value)
    if getattr(args, "listen", False):
        values["host"] = "0.0.0.0"
    if getattr(args, "nowebui", False):
        values["api"] = True
    values.update(overrides)
    return Settings(**values)


def _convert(name: str, value):
    if name in PATH_FIELDS:
        return _path(value)
    if name in AUTH_FIELDS:
        return parse_auth(value) if isinstance(value, str) else tuple(value)
    if name in AT_LEAST:
        return max(AT_LEAST[name], int(value))
    if name == "lora_dirs":
        return tuple(_path(p) for p in value)
    if name == "disabled_extensions":
        return tuple(value)
    return value


def _path(value) -> Path:
    return Path(value).expanduser().resolve()


def parse_auth(value: str | None) -> tuple[tuple[str, str], ...]:
    """``user:pass[,user2:pass2]`` or a path to a file with one ``user:pass`` per line."""
    if not value:
        return ()
    text = Path(value).read_text(encoding="utf-8") if os.path.isfile(value) else value
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise argparse.ArgumentTypeError("--auth expects user:pass (or a file of such lines)")
        pairs.append((user, password))
    return tuple(pairs)


# -- shared flag groups ----------------------------------------------------------------------------
def add_folder_flags(p: argparse.ArgumentParser) -> None:
    """``--models-dir`` and ``--cache-dir`` (defaults: ./models, ./cache)."""
    p.add_argument("--models-dir", help="models folder (default ./models; an A1111 'models' folder works)")
    p.add_argument("--cache-dir", help="hash/embedding cache folder (default ./cache)")


def add_lora_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora-dir", dest="lora_dirs", action="append", default=[],
                   help="another LoRA folder, searched after models/Lora (repeatable)")


def add_extension_flags(p: argparse.ArgumentParser) -> None:
    """The extension flags (webui.py and ``python -m modules.cli`` share them)."""
    p.add_argument("--extensions-dir", type=Path, default=REPO_ROOT / "extensions",
                   help="folder of extensions, one sub-folder each (default ./extensions)")
    p.add_argument("--disable-extension", dest="disabled_extensions", action="append", default=[], metavar="NAME",
                   help="do not load this extension (repeatable)")
    p.add_argument("--disable-all-extensions", action="store_true", help="load no extensions")
    p.add_argument("--extensions-config", type=Path, default=REPO_ROOT / "extensions.json",
                   help="extensions settings file: which are disabled, and their options (default ./extensions.json)")
