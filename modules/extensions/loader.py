"""Find, import and register the extensions in ``extensions/``; the result is one :class:`ExtensionSet`,
built once (``webui.py``, the CLI) and passed to the engine, the page and the API. Torch-free.

Each folder ``extensions/<name>/`` is imported as the package ``visage_ext_<name>`` (its ``__init__.py`` if it
has one, else an empty package over the folder), then its entry module as ``visage_ext_<name>.main``, so
relative imports inside the extension work; then ``register(api)`` is called. Anything going wrong on the
way (bad manifest, syntax error, an exception at import or in ``register``, a hook clashing with another
extension's) marks that extension *failed* with its error and undoes whatever it had registered; the others
load as usual.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path

from modules.errors import InvalidRequest
from modules.extensions.api import CliCommand, ExtensionApi, ExtensionTab, Postprocessor
from modules.extensions.config import ExtensionsConfig, read_config, write_enabled
from modules.extensions.manifest import ExtensionError, ExtensionManifest, read_manifest
from modules.messages import Message

log = logging.getLogger(__name__)

LOADED, FAILED, DISABLED = "loaded", "failed", "disabled"
#: modules whose import at load time makes start-up slow (and the page process heavy)
HEAVY_MODULES = ("torch", "diffusers", "transformers")


@dataclass
class ExtensionInfo:
    """One folder of ``extensions/`` and what became of it."""

    name: str
    folder: Path
    state: str  # loaded | failed | disabled
    manifest: ExtensionManifest | None = None
    error: str | None = None  # failed: why
    disabled_by: str | None = None  # disabled: "settings" | "flag" | "all"
    warnings: list[str] = field(default_factory=list)
    api: ExtensionApi | None = None

    def to_dict(self) -> dict:
        m = self.manifest
        api = self.api if self.state == LOADED else None
        return {
            "name": self.name, "state": self.state, "error": self.error, "disabled_by": self.disabled_by,
            "version": m.version if m else None, "description": m.description if m else "",
            "provides": list(m.provides) if m else [], "folder": str(self.folder),
            "postprocessors": [p.id for p in api.postprocessors] if api else [],
            "tabs": [t.id for t in api.tabs] if api else [],
            "routes": sorted({getattr(r, "path", "") for router in api.routers for r in router.routes}) if api else [],
            "cli_commands": [c.name for c in api.cli_commands] if api else [],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class ExtensionRoutes:
    extension: str
    router: object  # fastapi.APIRouter


class ExtensionSet:
    """Every extension found, and the hooks of the loaded ones (in load order: folder names sorted)."""

    def __init__(self, infos: Iterable[ExtensionInfo] = (), *, folder: Path | None = None,
                 config_path: Path | None = None, config: ExtensionsConfig | None = None):
        self.infos: dict[str, ExtensionInfo] = {i.name: i for i in infos}
        self.folder = folder
        self.config_path = config_path
        self.config = config or ExtensionsConfig()

    @classmethod
    def empty(cls) -> "ExtensionSet":
        return cls()

    # -- views ----------------------------------------------------------------------------------------
    @property
    def loaded(self) -> dict[str, ExtensionInfo]:
        return {n: i for n, i in self.infos.items() if i.state == LOADED}

    @property
    def failed(self) -> dict[str, str]:
        return {n: i.error or "" for n, i in self.infos.items() if i.state == FAILED}

    @property
    def disabled(self) -> dict[str, str]:
        """name -> who disabled it: "settings" (the settings file), "flag" (--disable-extension) or "all"."""
        return {n: i.disabled_by or "" for n, i in self.infos.items() if i.state == DISABLED}

    def _hooks(self, attr: str) -> list:
        return [h for i in self.loaded.values() for h in getattr(i.api, attr)]

    @property
    def postprocessors(self) -> list[Postprocessor]:
        return self._hooks("postprocessors")

    @property
    def tabs(self) -> list[ExtensionTab]:
        return self._hooks("tabs")

    @property
    def routers(self) -> list[ExtensionRoutes]:
        return [ExtensionRoutes(i.name, r) for i in self.loaded.values() for r in i.api.routers]

    @property
    def cli_commands(self) -> list[CliCommand]:
        return self._hooks("cli_commands")

    def summary(self) -> list[dict]:
        """JSON-ready: one entry per extension folder (``GET /api/v1/extensions``, the page, the CLI)."""
        return [i.to_dict() for i in self.infos.values()]

    # -- post-processing ------------------------------------------------------------------------------
    def postprocessor(self, id: str) -> Postprocessor:
        for p in self.postprocessors:
            if p.id == id:
                return p
        known = ", ".join(p.id for p in self.postprocessors) or Message("rule.none_installed")
        raise InvalidRequest("postprocess", Message("rule.unknown_postprocessor", id=id, known=known))

    def resolve_postprocess(self, ids) -> list[Postprocessor]:
        """The post-processors a request asks for, in load order; InvalidRequest for an unknown id."""
        if ids is None:
            return []
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("postprocess", Message("rule.postprocess_ids"))
        wanted = {self.postprocessor(i).id for i in ids}
        return [p for p in self.postprocessors if p.id in wanted]

    def face_restorer(self) -> Postprocessor | None:
        """The first post-processor of kind "face_restore" (what A1111's ``restore_faces`` selects)."""
        return next((p for p in self.postprocessors if p.kind == "face_restore"), None)

    # -- engine and settings ----------------------------------------------------------------------------
    def bind(self, engine) -> None:
        """Give every loaded extension the engine (for ``api.submit``)."""
        for info in self.loaded.values():
            info.api._bind(engine)

    def options(self, name: str) -> dict:
        return dict(self.config.options.get(name, {}))

    def enabled_in_settings(self, name: str) -> bool:
        return name not in self.config.disabled

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Write the choice into the settings file; it applies at the next start."""
        if name not in self.infos:
            raise ExtensionError(f"no extension named {name!r} in {self.folder}")
        if self.config_path is None:
            raise ExtensionError("no extensions settings file is configured")
        self.config = write_enabled(self.config_path, name, enabled)


def load_extensions(folder: Path | None, *, disabled: Iterable[str] = (), disable_all: bool = False,
                    settings_file: Path | None = None, models_dir: Path, outputs_dir: Path, device: str = "auto",
                    lang: str = "en") -> ExtensionSet:
    """Load every extension under ``folder`` (missing folder: none). ``disabled``: names from
    ``--disable-extension``; the settings file's ``disabled`` list is added to them. Never raises for a
    broken extension: it is listed in ``.failed`` with its error."""
    config = read_config(settings_file)
    flagged = set(disabled)
    infos: list[ExtensionInfo] = []
    claimed: dict[str, dict[str, str]] = {"post-processor": {}, "cli command": {}, "package": {}}
    for path in _extension_folders(folder):
        name = path.name
        if disable_all or name in flagged or name in config.disabled:
            by = "all" if disable_all else ("flag" if name in flagged else "settings")
            info = ExtensionInfo(name, path, DISABLED, disabled_by=by)
            try:
                info.manifest = read_manifest(path)
            except ExtensionError:
                pass  # listed as disabled either way; its problem shows once it is enabled
            infos.append(info)
            continue
        infos.append(_load_one(path, claimed, config, models_dir=models_dir, outputs_dir=outputs_dir,
                               device=device, lang=lang))
    result = ExtensionSet(infos, folder=folder, config_path=settings_file, config=config)
    for info in infos:
        if info.state == FAILED:
            log.warning("extension %s failed: %s", info.name, info.error)
        for warning in info.warnings:
            log.warning("extension %s: %s", info.name, warning)
    if infos:
        log.info("extensions: %d loaded, %d failed, %d disabled", len(result.loaded), len(result.failed),
                 len(result.disabled))
    return result


def _extension_folders(folder: Path | None) -> list[Path]:
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted((p for p in Path(folder).iterdir()
                   if p.is_dir() and not p.name.startswith((".", "_"))), key=lambda p: p.name)


def _load_one(path: Path, claimed: dict, config: ExtensionsConfig, **env) -> ExtensionInfo:
    info = ExtensionInfo(path.name, path, FAILED)
    heavy_before = {m for m in HEAVY_MODULES if m in sys.modules}
    try:
        manifest = info.manifest = read_manifest(path)
        package = manifest.module_name
        if package in claimed["package"]:
            raise ExtensionError(f"its package name {package} clashes with extension {claimed['package'][package]}")
        api = ExtensionApi(manifest, path, options=config.options.get(manifest.name, {}), **env)
        module = _import(path, manifest)
        register = getattr(module, "register", None)
        if not callable(register):
            raise ExtensionError(f"{manifest.entry} has no register(api) function")
        try:
            register(api)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - an extension's bug must not stop Visage
            raise ExtensionError(f"register(api) raised {_describe(exc, path)}") from None
        finally:
            api._seal()
        _claim(claimed, "post-processor", [p.id for p in api.postprocessors], manifest.name)
        _claim(claimed, "cli command", [c.name for c in api.cli_commands], manifest.name)
        claimed["package"][package] = manifest.name
    except ExtensionError as exc:
        info.error = str(exc)
        _forget_modules(info)
        return info
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - import-time failures of any kind
        info.error = f"import failed: {_describe(exc, path)}"
        _forget_modules(info)
        return info
    info.state, info.api = LOADED, api
    heavy = sorted({m for m in HEAVY_MODULES if m in sys.modules} - heavy_before)
    if heavy:
        info.warnings.append(f"imported {', '.join(heavy)} while loading (slow start-up); import heavy "
                             "libraries inside the functions that need them")
    return info


def _claim(claimed: dict, what: str, names: list[str], owner: str) -> None:
    for name in names:
        if name in claimed[what]:
            raise ExtensionError(f"{what} {name!r} is already provided by extension {claimed[what][name]}")
    for name in names:
        claimed[what][name] = owner


def _import(path: Path, manifest: ExtensionManifest):
    """Import the folder as package ``visage_ext_<name>`` and return its entry module."""
    package = manifest.module_name
    _forget(package)
    init = path / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(path)])
    else:
        spec = ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(path)]
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[package] = pkg
    if spec.loader is not None:
        spec.loader.exec_module(pkg)
    entry_file = path / manifest.entry
    if not entry_file.is_file():
        raise ExtensionError(f"entry file {manifest.entry} is missing")
    entry_name = f"{package}.{entry_file.stem}"
    if entry_file.stem == "__init__":
        return pkg
    spec = importlib.util.spec_from_file_location(entry_name, entry_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[entry_name] = module
    spec.loader.exec_module(module)
    setattr(pkg, entry_file.stem, module)
    return module


def _forget(package: str) -> None:
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]


def _forget_modules(info: ExtensionInfo) -> None:
    if info.manifest is not None:
        _forget(info.manifest.module_name)


def _describe(exc: BaseException, folder: Path) -> str:
    """``Type: message (file:line)`` with the innermost frame inside the extension's folder."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, SyntaxError):
        return text  # its message already names the file and line
    where = None
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            where = f"{Path(frame.filename).resolve().relative_to(folder.resolve()).as_posix()}:{frame.lineno}"
        except ValueError:
            continue
    return f"{text} ({where})" if where else text


def load_from_settings(settings, *, lang: str = "en") -> ExtensionSet:
    """:func:`load_extensions` with the folders and flags of a :class:`~modules.settings.Settings`."""
    return load_extensions(settings.extensions_dir, disabled=settings.disabled_extensions,
                           disable_all=settings.disable_all_extensions, settings_file=settings.extensions_config,
                           models_dir=settings.models_dir, outputs_dir=settings.outputs_dir, device=settings.device,
                           lang=lang)
