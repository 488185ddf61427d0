"""``extensions/<name>/extension.json``: what an extension is and what it provides. Torch-free.

::

    {"name": "gpen", "version": "1.0.0", "description": "GPEN face restoration",
     "provides": ["postprocessor", "api", "cli", "settings"], "entry": "main.py"}

``name`` must equal the folder's name (it names the extension everywhere: settings, flags, the page);
``provides`` lists the hooks ``register(api)`` may add (``add_postprocessor`` needs "postprocessor",
``add_tab`` "tab", ``add_routes`` "api", ``add_cli_command`` "cli"; "settings" says it reads options
from the extensions settings file); ``entry`` is a ``.py`` file at the top of the folder.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from modules.errors import VisageError

MANIFEST_FILE = "extension.json"
DEFAULT_ENTRY = "main.py"
#: the hooks an extension may declare, in the order they are listed
PROVIDES = ("postprocessor", "tab", "api", "cli", "settings")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENTRY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")
MAX_MANIFEST_BYTES = 64 * 1024
MAX_TEXT = 2000


class ExtensionError(VisageError):
    """An extension is broken (bad manifest, failed import, register() raised, bad hook) or refused an
    action; the message names the extension and what is wrong."""

    code = "extension_error"


@dataclass(frozen=True)
class ExtensionManifest:
    name: str
    version: str
    description: str
    provides: tuple[str, ...]
    entry: str = DEFAULT_ENTRY

    @property
    def module_name(self) -> str:
        """The package the folder is imported as."""
        return package_name(self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "description": self.description,
                "provides": list(self.provides), "entry": self.entry}


def package_name(name: str) -> str:
    return "visage_ext_" + name.replace("-", "_")


def read_manifest(folder: Path) -> ExtensionManifest:
    """Parse ``folder/extension.json``; raise :class:`ExtensionError` saying what is wrong."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExtensionError(f"no {MANIFEST_FILE} in {folder.name}/")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ExtensionError(f"{MANIFEST_FILE} is over {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ExtensionError(f"{MANIFEST_FILE} is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ExtensionError(f"{MANIFEST_FILE} is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
    return parse_manifest(data, folder.name)


def parse_manifest(data, folder_name: str) -> ExtensionManifest:
    """A manifest from parsed JSON; ``folder_name`` is the folder it came from."""
    where = MANIFEST_FILE
    if not isinstance(data, dict):
        raise ExtensionError(f"{where} must hold a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "version", "description", "provides", "entry"})
    if unknown:
        raise ExtensionError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: name, version, "
                             "description, provides, entry)")
    name = _text(data, "name", required=True)
    if not NAME_RE.match(name):
        raise ExtensionError(f"{where}: name {name!r} must be 1-64 letters, digits, '_' or '-' "
                             "(starting with a letter or digit)")
    if name != folder_name:
        raise ExtensionError(f"{where}: name {name!r} differs from its folder name {folder_name!r} "
                             "(rename one so they match)")
    version = _text(data, "version", required=True)
    description = _text(data, "description", required=False)
    provides = data.get("provides", [])
    if not isinstance(provides, list) or not all(isinstance(p, str) for p in provides):
        raise ExtensionError(f"{where}: provides must be a list of strings from {', '.join(PROVIDES)}")
    bad = [p for p in provides if p not in PROVIDES]
    if bad:
        raise ExtensionError(f"{where}: provides has unknown item(s) {', '.join(map(repr, bad))} "
                             f"(allowed: {', '.join(PROVIDES)})")
    entry = data.get("entry", DEFAULT_ENTRY)
    if not isinstance(entry, str) or not _ENTRY_RE.match(entry):
        raise ExtensionError(f"{where}: entry must name a .py file at the top of the extension's folder "
                             f"(e.g. {DEFAULT_ENTRY!r}), not {entry!r}")
    ordered = tuple(p for p in PROVIDES if p in provides)
    return ExtensionManifest(name=name, version=version, description=description, provides=ordered, entry=entry)


def _text(data: dict, key: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise ExtensionError(f"{MANIFEST_FILE}: missing required field {key!r}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ExtensionError(f"{MANIFEST_FILE}: {key} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise ExtensionError(f"{MANIFEST_FILE}: {key} is over {MAX_TEXT} characters")
    return value.strip()
