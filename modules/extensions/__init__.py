"""Extensions: ``extensions/<name>/`` folders with a manifest and a ``register(api)`` entry point.
Torch-free. See ``extensions/README.md`` (writing one) and README "Writing an extension".

- :mod:`.manifest`: ``extension.json`` -> :class:`ExtensionManifest` (bad ones -> :class:`ExtensionError`)
- :mod:`.api`: :class:`ExtensionApi` (what ``register`` gets) and the contexts hooks receive
- :mod:`.loader`: :func:`load_extensions` -> :class:`ExtensionSet` (built once, passed to engine/page/API/CLI)
- :mod:`.config`: the settings file (``{"disabled": [...], "options": {name: {...}}}``)
- :mod:`.postprocess`: running post-processors inside a generation job
"""
from modules.extensions.api import (
    CliCommand, ExtensionApi, ExtensionTab, PostprocessContext, PostprocessResult, Postprocessor, TabContext,
)
from modules.extensions.config import ExtensionsConfig, read_config, write_enabled
from modules.extensions.loader import ExtensionInfo, ExtensionRoutes, ExtensionSet, load_extensions, load_from_settings
from modules.extensions.manifest import PROVIDES, ExtensionError, ExtensionManifest, read_manifest

__all__ = [
    "PROVIDES", "CliCommand", "ExtensionApi", "ExtensionError", "ExtensionInfo", "ExtensionManifest",
    "ExtensionRoutes", "ExtensionSet", "ExtensionTab", "ExtensionsConfig", "PostprocessContext", "load_from_settings",
    "PostprocessResult", "Postprocessor", "TabContext", "load_extensions", "read_config", "read_manifest",
    "write_enabled",
]
