"""The top of the page: status line and checkpoint picker. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.errors import VisageError
from modules.families import family_info
from modules.ui.common import (
    POLL_S, current_model_name, model_choices, status_text, ui_error, ui_info, wait_for,
)
from modules.ui.i18n import Translator
from modules.ui.txt2img import family_updates


@dataclass
class Header:
    status: gr.Markdown
    model: gr.Dropdown
    refresh: gr.Button
    timer: gr.Timer
    welcome: gr.Column | None = None  # shown while no usable model exists: what to do first
    get_models: gr.Button | None = None  # opens the Models tab (starter packs)


def has_models(entries) -> bool:
    return any(e.supported for e in entries)


def build(engine, t: Translator) -> Header:
    entries = engine.models()
    with gr.Row(equal_height=True):
        model = gr.Dropdown(choices=model_choices(entries), value=current_model_name(engine, entries),
                            label=t("model.label"), allow_custom_value=True, scale=4,
                            elem_id="model_checkpoint")
        refresh = gr.Button(t("model.refresh"), scale=0, min_width=48, elem_id="model_refresh")
        status = gr.Markdown(status_text(t, engine.status()), elem_id="visage_status")
    timer = gr.Timer(1.0)
    timer.tick(lambda: status_text(t, engine.status()), None, status, api_name="status",
               show_progress="hidden", concurrency_limit=None)
    with gr.Column(visible=not has_models(entries), elem_id="visage_welcome") as welcome:
        gr.Markdown(t("welcome.text"))
        get_models = gr.Button(t("welcome.get_models"), variant="primary", elem_id="visage_get_models")
    return Header(status, model, refresh, timer, welcome, get_models)


def welcome_update(engine) -> gr.Column:
    """The first-steps panel: visible only while the model folders hold no usable model."""
    return gr.Column(visible=not has_models(engine.models()))


def current_updates(engine, t: Translator, *, refresh: bool = False) -> tuple:
    """(model dropdown, status line, *family defaults) for the engine's current model."""
    entries = engine.models(refresh=refresh)
    return (gr.Dropdown(choices=model_choices(entries), value=current_model_name(engine, entries)),
            status_text(t, engine.status()),
            *family_updates(family_info(engine.family_of(None))))


def make_switch(engine, t: Translator, poll_s: float = POLL_S):
    """Handler: model name -> switch (a job); reset the txt2img defaults to the model's family.

    Yields ``(model dropdown, status line, *family defaults)``; on failure restores the current
    model's values and raises a translated gr.Error.
    """
    skip_family = (gr.skip(),) * 6

    def switch(name: str | None):
        if not name:
            yield (gr.skip(), gr.skip(), *skip_family)
            return
        try:
            family = engine.family_of(name)
            job = engine.switch_model(name)
        except VisageError as exc:
            yield current_updates(engine, t)
            raise ui_error(t, exc) from None
        yield (gr.skip(), status_text(t, engine.status()), *family_updates(family_info(family)))
        for _ in wait_for(job, poll_s):
            pass
        try:
            job.wait(0)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a message, never a traceback
            yield current_updates(engine, t)
            raise ui_error(t, exc) from None
        ui_info(t, t("model.switched", model=name))
        yield (name, status_text(t, engine.status()), *skip_family)

    return switch
