"""The extensions settings file (default ``extensions.json`` next to ``config.json``; ``--extensions-config``).
Torch-free. ::

    {"disabled": ["gpen"], "options": {"gpen": {"model": "GPEN-BFR-512", "fidelity": 0.5}}}

``disabled``: extensions not to load (the page's Extensions accordion writes this list; a restart applies
it). ``options``: one object per extension, read-only to it as ``api.settings``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from modules.atomic import atomic_write_json
from modules.extensions.manifest import ExtensionError

log = logging.getLogger(__name__)
MAX_CONFIG_BYTES = 1 << 20


@dataclass
class ExtensionsConfig:
    disabled: list[str] = field(default_factory=list)
    options: dict[str, dict] = field(default_factory=dict)
    error: str | None = None  # why the file could not be read (then it is treated as empty and not overwritten)

    def to_dict(self) -> dict:
        return {"disabled": sorted(set(self.disabled)), "options": self.options}


def read_config(path: Path | None) -> ExtensionsConfig:
    """The settings file; missing means empty. A broken file is reported in ``error`` (never raised):
    Visage still starts, with every extension enabled and no options."""
    if path is None or not Path(path).is_file():
        return ExtensionsConfig()
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"over {MAX_CONFIG_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        return _parse(data)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        message = f"{path.name} could not be read ({type(exc).__name__}: {exc}); fix or delete it"
        log.warning("extensions settings: %s", message)
        return ExtensionsConfig(error=message)


def _parse(data) -> ExtensionsConfig:
    if not isinstance(data, dict):
        raise ValueError("must hold a JSON object")
    disabled = data.get("disabled", [])
    if not isinstance(disabled, list) or not all(isinstance(x, str) for x in disabled):
        raise ValueError("'disabled' must be a list of extension names")
    options = data.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ValueError("'options' must map extension names to objects")
    return ExtensionsConfig(disabled=list(disabled), options=dict(options))


def write_enabled(path: Path, name: str, enabled: bool) -> ExtensionsConfig:
    """Enable or disable ``name`` in the settings file, atomically, keeping its other keys. Refuses to
    overwrite a file it cannot read (raises ExtensionError)."""
    path = Path(path)
    config = read_config(path)
    if config.error:
        raise ExtensionError(config.error)
    data = json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else {}
    disabled = {n for n in config.disabled if n != name}
    if not enabled:
        disabled.add(name)
    config.disabled = sorted(disabled)
    data["disabled"] = config.disabled
    data.setdefault("options", config.options)
    try:
        atomic_write_json(path, data)
    except OSError as exc:
        raise ExtensionError(f"could not write {path}: {exc}") from None
    return config
