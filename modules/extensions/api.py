"""What an extension sees: the ``ExtensionApi`` handed to its ``register(api)``, and the small typed
objects its hooks receive. Torch-free and Gradio-free (an extension's page code gets Gradio from its
own ``build`` function, which runs only when the page is built).

An extension has no access to Visage's globals (there are none): everything it may use comes through
``api`` at register time, a :class:`PostprocessContext` when its post-processor runs, a
:class:`TabContext` when its tab is built.
"""
from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from modules.errors import NotReady
from modules.extensions.manifest import ExtensionError, ExtensionManifest

if TYPE_CHECKING:  # annotations only: importing them here would make this module heavier
    from fastapi import APIRouter
    from PIL.Image import Image

    from modules.generation.params import GenerationRequest
    from modules.jobs import Job, JobContext

#: post-processor kinds Visage knows; "face_restore" is what A1111's ``restore_faces: true`` selects
POSTPROCESSOR_KINDS = ("face_restore",)
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
COMMAND_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
MAX_LABEL = 200


@dataclass(frozen=True)
class PostprocessResult:
    """A post-processed image and what to record about it in the infotext (``{"Face restoration": "GPEN"}``).
    Keys follow A1111's infotext rules: a word, then words, spaces, ``-`` or ``/``."""

    image: "Image"
    infotext: dict[str, str] = field(default_factory=dict)


@dataclass
class PostprocessContext:
    """What a post-processor sees for one image of a generation job (it runs on the engine's worker,
    holding the device lock, after the image is decoded and before it is saved)."""

    request: "GenerationRequest"  # the request as it ran (family defaults filled in)
    seed: int  # this image's seed
    index: int  # this image's place in the job's images (0-based)
    options: dict  # the extension's options from the extensions settings file (a copy)
    device: str  # the device the engine runs on, e.g. "cpu" or "cuda"
    report: Callable[[str, int, int], None]  # report(phase, step, total): progress shown on the page/API
    check_cancelled: Callable[[], None] = lambda: None  # raises Interrupted when the user pressed Interrupt


PostprocessFn = Callable[["Image", PostprocessContext], "PostprocessResult | Image"]


@dataclass(frozen=True)
class Postprocessor:
    id: str
    label_en: str
    label_zh: str
    run: PostprocessFn
    extension: str
    kind: str | None = None

    def label(self, lang: str) -> str:
        return self.label_zh if lang == "zh" else self.label_en


@dataclass
class TabContext:
    """What a tab's ``build(ctx)`` gets (it runs inside a ``gr.Tab`` while the page is built)."""

    engine: Any  # the engine the page talks to (status(), models(), generate(), ...)
    t: Callable[..., str]  # the page's translator (Visage's own keys)
    lang: str  # "en" | "zh"
    submit: Callable[[str, Callable[["JobContext"], Any]], "Job"]  # run fn(ctx) on the engine's job queue
    extension: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    def text(self, en: str, zh: str) -> str:
        """The extension's own string in the page language."""
        return zh if self.lang == "zh" else en


@dataclass(frozen=True)
class ExtensionTab:
    id: str
    title_en: str
    title_zh: str
    build: Callable[[TabContext], None]
    extension: str

    def title(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title_en

    @property
    def elem_id(self) -> str:
        return f"ext_{self.extension}_{self.id}".replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class CliCommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    extension: str


class ExtensionApi:
    """The one object ``register(api)`` receives. Hooks can be added only during ``register``."""

    def __init__(self, manifest: ExtensionManifest, folder: Path, *, models_dir: Path, outputs_dir: Path,
                 device: str = "auto", lang: str = "en", options: Mapping[str, Any] | None = None):
        self.name = manifest.name
        self.manifest = manifest
        self.folder = Path(folder)
        self.models_dir = Path(models_dir)
        self.outputs_dir = Path(outputs_dir)
        self.device = device
        self.lang = lang
        self.settings: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        self.log = logging.getLogger(f"visage.ext.{self.name}")
        self.postprocessors: list[Postprocessor] = []
        self.tabs: list[ExtensionTab] = []
        self.routers: list["APIRouter"] = []
        self.cli_commands: list[CliCommand] = []
        self._engine = None
        self._sealed = False

    # -- hooks -------------------------------------------------------------------------------------
    def add_postprocessor(self, id: str, label_en: str, label_zh: str, run: PostprocessFn, *,
                          kind: str | None = None) -> None:
        """Run ``run(image, ctx)`` on each generated image of a request that lists ``id`` in ``postprocess``.
        It returns a :class:`PostprocessResult` (image + infotext entries) or just the new image.
        ``kind="face_restore"``: A1111's ``restore_faces: true`` selects it."""
        self._check_open("postprocessor", "add_postprocessor")
        _check_id("post-processor id", id)
        _check_label("label_en", label_en)
        _check_label("label_zh", label_zh)
        _check_callable("run", run)
        if kind is not None and kind not in POSTPROCESSOR_KINDS:
            raise ExtensionError(f"add_postprocessor: kind must be one of {', '.join(POSTPROCESSOR_KINDS)} "
                                 f"or None, not {kind!r}")
        if any(p.id == id for p in self.postprocessors):
            raise ExtensionError(f"add_postprocessor: id {id!r} is added twice")
        self.postprocessors.append(Postprocessor(id, label_en, label_zh, run, self.name, kind))

    def add_tab(self, id: str, title_en: str, title_zh: str, build: Callable[[TabContext], None]) -> None:
        """A page tab (after Visage's own); ``build(ctx)`` lays it out inside ``gr.Tab`` and wires its events."""
        self._check_open("tab", "add_tab")
        _check_id("tab id", id)
        _check_label("title_en", title_en)
        _check_label("title_zh", title_zh)
        _check_callable("build", build)
        if any(t.id == id for t in self.tabs):
            raise ExtensionError(f"add_tab: id {id!r} is added twice")
        self.tabs.append(ExtensionTab(id, title_en, title_zh, build, self.name))

    def add_routes(self, router: "APIRouter") -> None:
        """HTTP routes, served by the API (``--api``/``--nowebui``) with the native API's auth."""
        self._check_open("api", "add_routes")
        from fastapi import APIRouter

        if not isinstance(router, APIRouter):
            raise ExtensionError(f"add_routes: expected a fastapi.APIRouter, got {type(router).__name__}")
        self.routers.append(router)

    def add_cli_command(self, name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                        run: Callable[[argparse.Namespace], int]) -> None:
        """``python -m modules.cli <name> ...``: ``configure(parser)`` adds its flags, ``run(args)`` returns
        the exit code."""
        self._check_open("cli", "add_cli_command")
        if not isinstance(name, str) or not COMMAND_RE.match(name):
            raise ExtensionError(f"add_cli_command: name must be lower-case letters, digits and '-', not {name!r}")
        _check_label("help", help)
        _check_callable("configure", configure)
        _check_callable("run", run)
        if any(c.name == name for c in self.cli_commands):
            raise ExtensionError(f"add_cli_command: {name!r} is added twice")
        self.cli_commands.append(CliCommand(name, help, configure, run, self.name))

    # -- running work --------------------------------------------------------------------------------
    def submit(self, kind: str, fn: Callable[["JobContext"], Any]) -> "Job":
        """Run ``fn(ctx)`` on the engine's job queue (one at a time with generations, so the device is
        free); returns the :class:`~modules.jobs.Job`. Raises NotReady until the engine exists (in the CLI,
        only commands that build one have it)."""
        if self._engine is None:
            raise NotReady(f"extension {self.name}: the engine is not running yet, so no job can be submitted")
        return self._engine.submit(f"{self.name}:{kind}", fn)

    @property
    def engine_ready(self) -> bool:
        return self._engine is not None

    # -- used by the loader -----------------------------------------------------------------------------
    def _check_open(self, provides: str, method: str) -> None:
        if self._sealed:
            raise ExtensionError(f"extension {self.name}: {method} may only be called inside register(api)")
        if provides not in self.manifest.provides:
            raise ExtensionError(f"{method} needs {provides!r} in the manifest's provides "
                                 f"(it lists: {', '.join(self.manifest.provides) or 'nothing'})")

    def _seal(self) -> None:
        self._sealed = True

    def _bind(self, engine) -> None:
        self._engine = engine


def _check_id(what: str, value) -> None:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ExtensionError(f"{what} must be 1-64 lower-case letters, digits, '_', '.' or '-', not {value!r}")


def _check_label(what: str, value) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL:
        raise ExtensionError(f"{what} must be a non-empty string of at most {MAX_LABEL} characters")


def _check_callable(what: str, value) -> None:
    if not callable(value):
        raise ExtensionError(f"{what} must be callable, not {type(value).__name__}")
