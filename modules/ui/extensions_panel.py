"""Extensions on the page: the System tab's "Extensions" accordion (each extension with its version, what it
provides, its state and an enable checkbox that writes the settings file) and the extensions' own tabs.
Torch-free: an extension's ``build(ctx)`` gets the engine through :class:`~modules.extensions.TabContext`.
"""
from __future__ import annotations

import logging

import gradio as gr

from modules.errors import VisageError
from modules.extensions import ExtensionSet, TabContext
from modules.ui.common import ui_error, ui_info
from modules.ui.i18n import Translator

log = logging.getLogger(__name__)


def _markdown_text(text: str) -> str:
    for ch in "\\`*[]<>_":
        text = text.replace(ch, "\\" + ch)
    return text


def row_text(t: Translator, item: dict) -> str:
    """One extension as Markdown: name, version, what it provides, its state (and error or warnings)."""
    provides = ", ".join(t(f"ext.provides_{p}") for p in item["provides"]) or t("ext.provides_nothing")
    if item["state"] == "loaded":
        state = t("ext.state_loaded")
    elif item["state"] == "failed":
        state = t("ext.state_failed", error=_markdown_text(item["error"] or ""))
    else:
        state = t("ext.state_disabled", by=t(f"ext.by_{item['disabled_by'] or 'settings'}"))
    lines = [t("ext.row", name=_markdown_text(item["name"]), version=_markdown_text(item["version"] or "?"),
               provides=provides, state=state)]
    if item["description"]:
        lines.append(_markdown_text(item["description"]))
    lines += [t("ext.warning", warning=_markdown_text(w)) for w in item["warnings"]]
    return "\n\n".join(lines)


def make_set_enabled(extensions: ExtensionSet, t: Translator, name: str):
    """Handler for one extension's checkbox: write the settings file, say a restart applies it."""

    def set_enabled(enabled: bool) -> None:
        try:
            extensions.set_enabled(name, bool(enabled))
        except VisageError as exc:
            raise ui_error(t, exc) from None
        ui_info(t, t("ext.saved_on" if enabled else "ext.saved_off", name=name))

    return set_enabled


def build_accordion(t: Translator, extensions: ExtensionSet | None) -> list[gr.Checkbox]:
    """The "Extensions" accordion (inside the System tab). Returns the enable checkboxes (in listing order)."""
    if extensions is None:
        return []
    boxes = []
    items = extensions.summary()
    with gr.Accordion(t("ext.title", count=len(items)), open=bool(extensions.failed), elem_id="system_extensions"):
        folder = str(extensions.folder) if extensions.folder else "-"
        gr.Markdown(t("ext.intro", folder=_markdown_text(folder)) if items else
                    t("ext.none", folder=_markdown_text(folder)))
        if extensions.config.error:
            gr.Markdown(t("ext.config_error", error=_markdown_text(extensions.config.error)))
        for item in items:
            with gr.Row(equal_height=True):
                gr.Markdown(row_text(t, item), elem_id=f"system_ext_{item['name']}")
                box = gr.Checkbox(extensions.enabled_in_settings(item["name"]), label=t("ext.enabled"),
                                  scale=0, min_width=140, elem_id=f"system_ext_{item['name']}_enabled")
            box.input(make_set_enabled(extensions, t, item["name"]), box, None, api_visibility="private",
                      show_progress="hidden")
            boxes.append(box)
    return boxes


def build_tabs(engine, t: Translator, extensions: ExtensionSet | None) -> list[gr.Tab]:
    """One ``gr.Tab`` per extension tab (call inside ``gr.Tabs``, after Visage's own). A ``build`` that
    raises leaves its tab showing the error; the page and the other tabs are unaffected."""
    if extensions is None:
        return []
    pages = []
    for tab in extensions.tabs:
        info = extensions.infos[tab.extension]

        def submit(kind, fn, _name=tab.extension):
            return engine.submit(f"{_name}:{kind}", fn)

        ctx = TabContext(engine=engine, t=t, lang=t.lang, submit=submit, extension=tab.extension,
                         settings=info.api.settings if info.api else {})
        with gr.Tab(tab.title(t.lang), id=tab.elem_id, elem_id=tab.elem_id) as page:
            try:
                tab.build(ctx)
            except Exception as exc:  # noqa: BLE001 - an extension's bug must not break the page
                log.exception("extension %s: tab %s failed to build", tab.extension, tab.id)
                gr.Markdown(t("ext.tab_failed", name=_markdown_text(tab.extension),
                              error=_markdown_text(f"{type(exc).__name__}: {exc}")))
        pages.append(page)
    return pages
