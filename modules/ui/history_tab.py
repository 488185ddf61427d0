"""The History tab: saved outputs by date, their infotext, send to txt2img, move to trash. Torch-free.

Reads ``engine.folders.outputs`` through :mod:`modules.outputs.history` (nothing is ever deleted: "Move to
trash" moves the file to ``outputs/trash/<date>/``). The "send to txt2img" button is wired by the page
(it spans tabs) with the same handler as PNG Info's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from modules.errors import VisageError
from modules.outputs import history
from modules.outputs.saving import read_png_parameters
from modules.ui.common import ui_error, ui_info, ui_warning
from modules.ui.i18n import Translator


@dataclass
class HistoryTab:
    date: gr.Dropdown
    refresh: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    summary: gr.Markdown
    send: gr.Button
    trash: gr.Button
    names: gr.State
    selected: gr.State
    send_img2img: gr.Button | None = None  # the selected image and its prompts to img2img / Inpaint
    send_inpaint: gr.Button | None = None


def outputs_root(engine) -> Path | None:
    """The engine's outputs folder (None for an engine without one: the tab then lists nothing)."""
    folders = getattr(engine, "folders", None)
    return Path(folders.outputs) if folders is not None else None


def selected_image(engine, selected: str | None):
    """The selected saved image (opened inside the outputs folder only), or None."""
    from PIL import Image

    root = outputs_root(engine)
    if not selected or root is None:
        return None
    with Image.open(history.resolve_image(root, selected)) as im:
        return im.convert("RGB")


def dates(engine) -> list[str]:
    root = outputs_root(engine)
    return history.list_dates(root) if root is not None else []


def day_updates(t: Translator, engine, date: str | None) -> tuple:
    """(gallery, names, summary, infotext, selected) for ``date``."""
    root = outputs_root(engine)
    if root is None or not date:
        return gr.Gallery(value=[], selected_index=None), [], t("history.empty"), "", None
    try:
        images = history.list_images(root, date)
    except VisageError as exc:
        raise ui_error(t, exc) from None
    # a new listing closes the preview (its image may be the one just moved to the trash)
    gallery = gr.Gallery(value=[(str(item.path), Path(item.name).name) for item in images], selected_index=None)
    summary = t("history.count", count=len(images), date=date) if images else t("history.empty")
    return gallery, [item.name for item in images], summary, "", None


def make_refresh(engine, t: Translator):
    """Handler ``(current date) -> (date dropdown, gallery, names, summary, infotext, selected)``: re-reads the
    dates; keeps the shown date when it still has images, else shows the newest."""

    def refresh(current: str | None):
        choices = dates(engine)
        date = current if current in choices else (choices[0] if choices else None)
        return (gr.Dropdown(choices=choices, value=date), *day_updates(t, engine, date))

    return refresh


def make_select(engine, t: Translator):
    """Handler for a gallery click: ``(names, event) -> (infotext, selected name)``."""

    def select(names: list, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        if not names or not 0 <= index < len(names):
            return "", None
        root = outputs_root(engine)
        try:
            text = read_png_parameters(history.resolve_image(root, names[index]))
        except VisageError as exc:
            raise ui_error(t, exc) from None
        return (text or t("history.no_infotext")), names[index]

    return select


def make_trash(engine, t: Translator):
    """Handler ``(selected, date) -> (date dropdown, gallery, names, summary, infotext, selected)``."""
    refresh = make_refresh(engine, t)

    def trash(selected: str | None, date: str | None):
        root = outputs_root(engine)
        if not selected or root is None:
            gr.Warning(t("history.pick_first"), title=t("error.warning_title"))
            return refresh(date)
        try:
            target = history.move_to_trash(root, selected)
        except VisageError as exc:
            ui_warning(t, exc)
            return refresh(date)
        ui_info(t, t("history.trashed", name=Path(selected).name,
                     folder=str(target.parent.relative_to(root))))
        return refresh(date)

    return trash


def build(engine, t: Translator) -> HistoryTab:
    """Lay out the tab and wire its own events (date, refresh, gallery click, move to trash)."""
    choices = dates(engine)
    first = choices[0] if choices else None
    with gr.Row(equal_height=True):
        date = gr.Dropdown(choices=choices, value=first, label=t("history.date"), scale=3, min_width=160,
                           elem_id="history_date")
        refresh = gr.Button(t("history.refresh"), scale=0, min_width=120, elem_id="history_refresh")
        summary = gr.Markdown(t("history.empty"), elem_id="history_summary")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label=t("history.gallery"), columns=4, height=560, object_fit="contain",
                                 allow_preview=True, interactive=False, buttons=["download", "fullscreen"],
                                 elem_id="history_gallery")
        with gr.Column(scale=2):
            infotext = gr.Textbox(label=t("history.infotext"), lines=8, interactive=False, buttons=["copy"],
                                  elem_id="history_infotext")
            with gr.Row():
                send = gr.Button(t("history.send"), variant="primary", elem_id="history_send")
                trash = gr.Button(t("history.trash"), variant="stop", elem_id="history_trash")
            with gr.Row():
                send_img2img = gr.Button(t("img2img.send"), elem_id="history_send_img2img")
                send_inpaint = gr.Button(t("inpaint.send"), elem_id="history_send_inpaint")
    names = gr.State([])
    selected = gr.State(None)
    day_outputs = [gallery, names, summary, infotext, selected]
    all_outputs = [date, *day_outputs]
    date.input(lambda d: day_updates(t, engine, d), date, day_outputs, api_visibility="private",
               show_progress="hidden")
    refresh.click(make_refresh(engine, t), date, all_outputs, api_visibility="private", show_progress="hidden")
    gallery.select(make_select(engine, t), names, [infotext, selected], api_visibility="private")
    trash.click(make_trash(engine, t), [selected, date], all_outputs, api_visibility="private",
                show_progress="hidden")
    return HistoryTab(date, refresh, gallery, infotext, summary, send, trash, names, selected, send_img2img,
                      send_inpaint)
