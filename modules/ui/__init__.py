"""The Gradio page. Torch-free: it talks only to the ``engine`` object it is given.

Layout (A1111-like): status line and checkpoint picker on top, then one tab per module. A tab is a
function ``build(engine, t) -> <Tab dataclass>`` in its own module that lays out and wires its own
events; events that span tabs (model switch -> txt2img defaults, PNG Info -> txt2img) are wired here.
To add a tab: write ``modules/ui/<name>.py`` with ``build(engine, t)`` and add it to :func:`build_blocks`.

Public API endpoints (``gradio_client``): ``/generate``, ``/generate_preset``, ``/interrupt``,
``/switch_model``, ``/refresh_models``, ``/status``, ``/system``, ``/png_info``, ``/download_model``,
``/merge_lora``.

Language: the page is built for one language (``t``); its switch reloads it with ``?lang=CODE`` and
``webui.py`` (one page per language: ``/`` and ``/zh/`` or ``/en/``) sends the browser to that page.
Ctrl+Enter (Cmd+Enter) in a prompt box presses Generate (:data:`KEYS_JS`).

``/generate`` takes the eleven txt2img fields (prompt, negative_prompt, sampler, steps, cfg_scale,
width, height, seed, batch_size, batch_count, clip_skip) and then, optionally, ``styles`` (a list of
styles.csv names) and ``loras`` (``[[name, weight], ...]``; ``<lora:name:w>`` tags in the prompt work
too). ``/generate_preset`` takes ``preset_id, prompt`` (and optionally ``negative_prompt, styles``) and
uses the preset's values for the current model family. ``/merge_lora`` takes ``base, loras, out_name,
fmt, dtype`` (see :mod:`modules.ui.merge_tab`).
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from modules.errors import VisageError
from modules.families import family_info
from modules.ui import header as header_ui
from modules.ui import (
    edge_tab, extensions_panel, history_tab, img2img, lora_panel, merge_tab, models_tab, pnginfo, presets_panel,
    system_tab, txt2img,
)
from modules.outputs.infotext import request_from_infotext
from modules.ui.common import model_choices, ui_error, ui_info
from modules.ui.i18n import LANGUAGES, Translator, resolve_lang

__all__ = ["build_page", "build_blocks"]

#: ids of the tabs (``gr.Tabs(selected=...)``)
TAB_TXT2IMG = "txt2img"
TAB_PNGINFO = "pnginfo"
TAB_IMG2IMG = "img2img"
TAB_INPAINT = "inpaint"
TAB_MODELS = "models"
TAB_MERGE = "merge"
TAB_EDGE = "edge"
TAB_SYSTEM = "system"
TAB_HISTORY = "history"

#: page script (run once on load): Ctrl+Enter / Cmd+Enter in a txt2img prompt box clicks Generate
KEYS_JS = """() => {
  if (window.__visageKeys) { return []; }
  window.__visageKeys = true;
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || e.isComposing) { return; }
    const box = e.target && e.target.closest && e.target.closest("#txt2img_prompt, #txt2img_neg_prompt");
    if (!box) { return; }
    const button = document.querySelector("#txt2img_generate");
    if (button) { e.preventDefault(); button.click(); }
  }, true);
  return [];
}"""

#: run after the page's first-load event: ``<html data-visage-loaded="1">`` says the fields hold their values
LOADED_JS = """() => { document.documentElement.dataset.visageLoaded = "1"; return []; }"""

#: page CSS (``webui.py`` passes it to Gradio): the status line keeps a readable width, wrapping below the
#: checkpoint picker on a phone instead of one word per line
PAGE_CSS = """
#visage_status { min-width: min(260px, 100%) !important; }
#visage_lang { min-width: min(230px, 100%) !important; }
"""

#: the language switch: reload the page with ?lang=CODE (webui.py sends it to that language's page and
#: remembers the choice in a cookie)
SWITCH_LANG_JS = """(code) => {
  const url = new URL(window.location.href);
  url.searchParams.set("lang", code);
  window.location.assign(url.toString());
  return [];
}"""


def build_page(engine, settings, *, lang: str | None = None, extensions=None) -> gr.Blocks:
    """The whole page for ``engine``. ``lang``: zh | en | auto (None: ``settings.lang``).

    Launch it with ``theme``/``css`` as ``launch()`` arguments (Gradio 6).
    """
    return build_blocks(engine, Translator(resolve_lang(lang or getattr(settings, "lang", "auto"))),
                        extensions=extensions)


def build_blocks(engine, t: Translator, extensions=None) -> gr.Blocks:
    """The page with a given translator (tests pass a strict one and inspect what it produced).
    ``extensions`` (an ExtensionSet): post-processors in txt2img, the System tab's Extensions accordion, and
    the extensions' tabs after Visage's own."""
    with gr.Blocks(title=t("app.title"), analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            with gr.Column(scale=12, min_width=300):
                top = header_ui.build(engine, t)
            language = gr.Radio([(t(f"lang.{code}"), code) for code in LANGUAGES], value=t.lang,
                                label=t("lang.label"), scale=0, min_width=230, elem_id="visage_lang")
        page = _build_tabs(engine, t, extensions)
        top.get_models.click(lambda: gr.Tabs(selected=TAB_MODELS), None, page.tabs, api_visibility="private",
                             queue=False)
        _wire_tab_opening(engine, t, page)
        _wire_model_events(engine, t, demo, top, page)
        # infotext holds the final prompt (a preset's template already applied): sending it clears the
        # active preset, so that generating again gives the same image
        for button, source in ((page.png.send, page.png.parameters), (page.hist.send, page.hist.infotext)):
            button.click(make_send_to_txt2img(engine, t), source, [*page.txt.params, page.tabs],
                         api_visibility="private") \
                .success(lambda: presets_panel.chip_updates(t, None), None, page.txt.presets.chip_outputs,
                         api_visibility="private", show_progress="hidden")
        _wire_send_to_image_tabs(engine, page)
        language.input(None, language, None, js=SWITCH_LANG_JS, api_visibility="private", queue=False)
        demo.load(None, None, None, js=KEYS_JS, api_visibility="private", queue=False)
    return demo


def _build_tabs(engine, t: Translator, extensions) -> SimpleNamespace:
    """The tabs, in order; returns each tab's components (``.txt``, ``.models``, …) and page (``.pages``)."""
    with gr.Tabs(selected=TAB_TXT2IMG) as tabs:
        with gr.Tab(t("tab.txt2img"), id=TAB_TXT2IMG) as txt_page:
            txt = txt2img.build(engine, t, postprocessors=extensions.postprocessors if extensions else ())
        with gr.Tab(t("tab.img2img"), id=TAB_IMG2IMG) as img2img_page:
            img2img_tab = img2img.build(engine, t, img2img.IMG2IMG)
        with gr.Tab(t("tab.inpaint"), id=TAB_INPAINT) as inpaint_page:
            inpaint_tab = img2img.build(engine, t, img2img.INPAINT)
        with gr.Tab(t("tab.pnginfo"), id=TAB_PNGINFO) as png_page:
            png = pnginfo.build(engine, t)
        with gr.Tab(t("tab.history"), id=TAB_HISTORY) as history_page:
            hist = history_tab.build(engine, t)
        with gr.Tab(t("tab.models"), id=TAB_MODELS) as models_page:
            models = models_tab.build(engine, t)
        with gr.Tab(t("tab.merge"), id=TAB_MERGE) as merge_page:
            merge = merge_tab.build(engine, t)
        with gr.Tab(t("tab.edge"), id=TAB_EDGE) as edge_page:
            edge = edge_tab.build(engine, t)
        with gr.Tab(t("tab.system"), id=TAB_SYSTEM) as system_page:
            system = system_tab.build(engine, t)
            extensions_panel.build_accordion(t, extensions)
        ext_pages = extensions_panel.build_tabs(engine, t, extensions)
    pages = SimpleNamespace(txt=txt_page, img2img=img2img_page, inpaint=inpaint_page, png=png_page, history=history_page, models=models_page,
                            merge=merge_page, edge=edge_page, system=system_page, extensions=ext_pages)
    return SimpleNamespace(tabs=tabs, pages=pages, txt=txt, img2img=img2img_tab, inpaint=inpaint_tab, png=png, hist=hist, models=models, merge=merge,
                           edge=edge, system=system)


def _wire_tab_opening(engine, t: Translator, page: SimpleNamespace) -> None:
    """What opening a tab refreshes. The System tab refreshes itself only while it is open."""
    pages, system, hist = page.pages, page.system, page.hist
    for tab in (pages.txt, pages.img2img, pages.inpaint, pages.png, pages.models, *pages.extensions):
        tab.select(lambda: system_tab.timer_update(False), None, system.timer,
                   api_visibility="private", queue=False)
    # opening History also re-reads the outputs folder (images made since the page was built show up)
    history_refresh = history_tab.make_refresh(engine, t)
    pages.history.select(lambda date: (system_tab.timer_update(False), *history_refresh(date)), hist.date,
                         [system.timer, hist.date, hist.gallery, hist.names, hist.summary, hist.infotext,
                          hist.selected], api_visibility="private", show_progress="hidden")
    # opening Merge / Build edge re-reads the models they can start from (the base / source picker)
    for tab, module, picker in ((pages.merge, merge_tab, page.merge.base), (pages.edge, edge_tab, page.edge.model)):
        tab.select(lambda module=module: (system_tab.timer_update(False), module.model_list_update(engine)), None,
                   [system.timer, picker], api_visibility="private", queue=False)
    pages.system.select(lambda: system_tab.timer_update(True), None, system.timer,
                        api_visibility="private", queue=False) \
        .then(system_tab.make_refresh_all(engine, t), None, system.outputs,
              api_visibility="private", show_progress="hidden")


def _wire_model_events(engine, t: Translator, demo: gr.Blocks, top, page: SimpleNamespace) -> None:
    """Switching, refreshing, downloading, merging and building keep the checkpoint picker and lists current."""
    txt, models, merge = page.txt, page.models, page.merge
    current_outputs = [top.model, top.status, *txt.family_outputs]
    switch = top.model.input(header_ui.make_switch(engine, t), top.model, current_outputs,
                             api_name="switch_model", show_progress="minimal")
    refresh = top.refresh.click(lambda: header_ui.current_updates(engine, t, refresh=True), None,
                                current_outputs, api_visibility="private", show_progress="hidden")
    refresh.then(models_tab.make_refresh(engine, t), None, [models.summary, models.table],
                 api_visibility="private", show_progress="hidden")
    load = demo.load(lambda: header_ui.current_updates(engine, t), None, current_outputs,
                     api_visibility="private", show_progress="hidden")
    # mark the page as settled once the first-load values are in (browser tests wait for it)
    load.then(None, None, None, js=LOADED_JS, api_visibility="private", queue=False)
    # a new family re-sorts the preset gallery and the LoRA cards, re-applies the active preset's values
    for event in (switch, refresh, load):
        presets_panel.wire_family_change(engine, t, txt, event)
        lora_panel.wire_family_change(engine, t, txt.loras, event)

    def refresh_choices():
        return gr.Dropdown(choices=model_choices(engine.models()))

    for event in (models.refresh_event, models.download_event):
        event.then(refresh_choices, None, top.model, api_visibility="private", show_progress="hidden")
    # the first-steps panel goes once a model exists (downloaded, merged, or found after 🔄)
    for event in (load, refresh, models.refresh_event, models.download_event):
        event.then(lambda: header_ui.welcome_update(engine), None, top.welcome, api_visibility="private",
                   show_progress="hidden")
    # a merged model is listed at once: checkpoint picker, the Merge tab's base list, the Models table
    merge.merge_event.success(make_after_merge(engine, t), None,
                              [top.model, merge.base, models.summary, models.table],
                              api_visibility="private", show_progress="hidden")
    # a built package is listed at once in the checkpoint picker and the Models table
    page.edge.build_event.success(lambda: (refresh_choices(), *models_tab.make_refresh(engine, t)()), None,
                                  [top.model, models.summary, models.table], api_visibility="private",
                                  show_progress="hidden")


def picked_image(gallery, index):
    """The gallery's selected image (the first when none was clicked) as a PIL image, or None."""
    from PIL import Image

    items = list(gallery or [])
    if not items:
        return None
    item = items[index if isinstance(index, int) and 0 <= index < len(items) else 0]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(image, dict):  # a file reference
        image = image.get("path") or image.get("url")
    if isinstance(image, str):
        with Image.open(image) as im:
            image = im.convert("RGB")
    return image if isinstance(image, Image.Image) else None


def _wire_send_to_image_tabs(engine, page: SimpleNamespace) -> None:
    """"Send to img2img / inpaint" under the txt2img gallery, in PNG Info and in History: the image and its
    prompts, then that tab."""
    from PIL import Image

    from modules.outputs.infotext import parse_infotext

    def from_file(path):
        if not path:
            return None
        with Image.open(path) as im:
            return im.convert("RGB")

    sources = (  # (button pair, inputs, inputs -> (image, infotext))
        ((page.txt.send_img2img, page.txt.send_inpaint), [page.txt.gallery, page.txt.selected, page.txt.infotext],
         lambda gallery, index, text: (picked_image(gallery, index), text)),
        ((page.png.send_img2img, page.png.send_inpaint), [page.png.image, page.png.parameters],
         lambda path, text: (from_file(path), text)),
        ((page.hist.send_img2img, page.hist.send_inpaint), [page.hist.selected, page.hist.infotext],
         lambda selected, text: (history_tab.selected_image(engine, selected), text)),
    )
    for buttons, inputs, read in sources:
        for button, target, tab_id in zip(buttons, (page.img2img, page.inpaint), (TAB_IMG2IMG, TAB_INPAINT)):
            def send(*values, _read=read, _tab_id=tab_id):
                image, infotext = _read(*values)
                if image is None:
                    return gr.skip(), gr.skip(), gr.skip(), gr.skip()
                prompt, negative, _params = parse_infotext(infotext or "")
                return image, prompt, negative, gr.Tabs(selected=_tab_id)

            button.click(send, inputs, [target.image, target.prompt, target.negative_prompt, page.tabs],
                         api_visibility="private")


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
