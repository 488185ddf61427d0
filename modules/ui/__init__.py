"""The Gradio page. Torch-free: it talks only to the ``engine`` object it is given.

Layout (A1111-like): status line and checkpoint picker on top, then one tab per module. A tab is a
function ``build(engine, t) -> <Tab dataclass>`` in its own module that lays out and wires its own
events; events that span tabs (model switch -> txt2img defaults, PNG Info -> txt2img) are wired here.
To add a tab: write ``modules/ui/<name>.py`` with ``build(engine, t)`` and add it to :func:`build_blocks`.

Public API endpoints (``gradio_client``): ``/generate``, ``/generate_preset``, ``/interrupt``,
``/switch_model``, ``/refresh_models``, ``/status``, ``/system``, ``/png_info``, ``/download_model``,
``/merge_lora``.

``/generate`` takes the eleven txt2img fields (prompt, negative_prompt, sampler, steps, cfg_scale,
width, height, seed, batch_size, batch_count, clip_skip) and then, optionally, ``styles`` (a list of
styles.csv names) and ``loras`` (``[[name, weight], ...]``; ``<lora:name:w>`` tags in the prompt work
too). ``/generate_preset`` takes ``preset_id, prompt`` (and optionally ``negative_prompt, styles``) and
uses the preset's values for the current model family. ``/merge_lora`` takes ``base, loras, out_name,
fmt, dtype`` (see :mod:`modules.ui.merge_tab`).
"""
from __future__ import annotations

import gradio as gr

from modules.errors import VisageError
from modules.families import family_info
from modules.ui import header as header_ui
from modules.ui import lora_panel, merge_tab, models_tab, pnginfo, presets_panel, system_tab, txt2img
from modules.outputs.infotext import request_from_infotext
from modules.ui.common import model_choices, ui_error, ui_info
from modules.ui.i18n import Translator, resolve_lang

__all__ = ["build_page", "build_blocks"]

#: ids of the tabs (``gr.Tabs(selected=...)``)
TAB_TXT2IMG = "txt2img"
TAB_PNGINFO = "pnginfo"
TAB_MODELS = "models"
TAB_MERGE = "merge"
TAB_SYSTEM = "system"


def build_page(engine, settings, *, lang: str | None = None) -> gr.Blocks:
    """The whole page for ``engine``. ``lang``: zh | en | auto (None: ``settings.lang``).

    Launch it with ``theme``/``css`` as ``launch()`` arguments (Gradio 6).
    """
    return build_blocks(engine, Translator(resolve_lang(lang or getattr(settings, "lang", "auto"))))


def build_blocks(engine, t: Translator) -> gr.Blocks:
    """The page with a given translator (tests pass a strict one and inspect what it produced)."""
    with gr.Blocks(title=t("app.title"), analytics_enabled=False) as demo:
        top = header_ui.build(engine, t)
        with gr.Tabs(selected=TAB_TXT2IMG) as tabs:
            with gr.Tab(t("tab.txt2img"), id=TAB_TXT2IMG) as txt_page:
                txt = txt2img.build(engine, t)
            with gr.Tab(t("tab.pnginfo"), id=TAB_PNGINFO) as png_page:
                png = pnginfo.build(engine, t)
            with gr.Tab(t("tab.models"), id=TAB_MODELS) as models_page:
                models = models_tab.build(engine, t)
            with gr.Tab(t("tab.merge"), id=TAB_MERGE) as merge_page:
                merge = merge_tab.build(engine, t)
            with gr.Tab(t("tab.system"), id=TAB_SYSTEM) as system_page:
                system = system_tab.build(engine, t)

        # the System tab refreshes itself only while it is open
        for page in (txt_page, png_page, models_page):
            page.select(lambda: system_tab.timer_update(False), None, system.timer,
                        api_visibility="private", queue=False)
        # opening the Merge tab also re-reads the model list for its base picker
        merge_page.select(lambda: (system_tab.timer_update(False), merge_tab.model_list_update(engine)), None,
                          [system.timer, merge.base], api_visibility="private", queue=False)
        system_page.select(lambda: system_tab.timer_update(True), None, system.timer,
                           api_visibility="private", queue=False) \
            .then(system_tab.make_refresh(engine, t), None, [system.engine_info, system.cache_info],
                  api_visibility="private", show_progress="hidden")

        current_outputs = [top.model, top.status, *txt.family_outputs]
        switch = top.model.input(header_ui.make_switch(engine, t), top.model, current_outputs,
                                 api_name="switch_model", show_progress="minimal")
        refresh = top.refresh.click(lambda: header_ui.current_updates(engine, t, refresh=True), None,
                                    current_outputs, api_visibility="private", show_progress="hidden")
        refresh.then(models_tab.make_refresh(engine, t), None, [models.summary, models.table],
                     api_visibility="private", show_progress="hidden")
        load = demo.load(lambda: header_ui.current_updates(engine, t), None, current_outputs,
                         api_visibility="private", show_progress="hidden")
        # a new family re-sorts the preset gallery and the LoRA cards, re-applies the active preset's values
        for event in (switch, refresh, load):
            presets_panel.wire_family_change(engine, t, txt, event)
            lora_panel.wire_family_change(engine, t, txt.loras, event)

        def refresh_choices():
            return gr.Dropdown(choices=model_choices(engine.models()))

        models.refresh_event.then(refresh_choices, None, top.model, api_visibility="private",
                                  show_progress="hidden")
        models.download_event.then(refresh_choices, None, top.model, api_visibility="private",
                                   show_progress="hidden")
        # a merged model is listed at once: checkpoint picker, the Merge tab's base list, the Models table
        merge.merge_event.success(make_after_merge(engine, t), None,
                                  [top.model, merge.base, models.summary, models.table],
                                  api_visibility="private", show_progress="hidden")

        png.send.click(make_send_to_txt2img(engine, t), png.parameters, [*txt.params, tabs],
                       api_visibility="private")
    return demo


def make_after_merge(engine, t: Translator):
    """Handler after a merge: (checkpoint dropdown, Merge-tab base dropdown, Models summary, Models table)."""

    def refresh_after_merge():
        entries = engine.models()
        return (gr.Dropdown(choices=model_choices(entries)), merge_tab.model_list_update(engine),
                models_tab.summary_text(t, entries), models_tab.model_rows(t, entries))

    return refresh_after_merge


def make_send_to_txt2img(engine, t: Translator):
    """Handler: infotext -> updates for the txt2img inputs, then select the txt2img tab."""

    def send(text: str | None):
        if not text:
            return (*([gr.skip()] * len(txt2img.PARAM_FIELDS)), gr.skip())
        try:
            fields = request_from_infotext(text)
            samplers = family_info(engine.family_of(None)).samplers
        except VisageError as exc:
            raise ui_error(t, exc) from None
        updates, skipped = txt2img.updates_from_fields(fields, samplers)
        for sampler in skipped:
            gr.Warning(t("pnginfo.sampler_skipped", sampler=sampler), title=t("error.warning_title"))
        ui_info(t, t("pnginfo.sent"))
        return (*updates, gr.Tabs(selected=TAB_TXT2IMG))

    return send
