"""The txt2img tab: prompts and styles on top, LoRAs and presets, parameters left, images right. Torch-free."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial

import gradio as gr

from modules.errors import Interrupted, InvalidRequest, VisageError
from modules.families import FamilyInfo, family_info
from modules.generation.params import (
    HR_UPSCALERS, MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_HR_SCALE, MAX_STEPS, GenerationRequest,
)
from modules.messages import Message
from modules.ui import lora_panel, presets_panel
from modules.ui.common import POLL_S, queued_text, ui_error, ui_info, ui_warning
from modules.ui.i18n import Translator, message_text

#: txt2img inputs in the order of the generate handler's parameters (also the API's order)
PARAM_FIELDS = ("prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "width", "height",
                "seed", "batch_size", "batch_count", "clip_skip")


@dataclass
class Txt2ImgTab:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    sampler: gr.Dropdown
    steps: gr.Slider
    cfg_scale: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    batch_size: gr.Slider
    batch_count: gr.Slider
    clip_skip: gr.Slider
    random_seed: gr.Button
    reuse_seed: gr.Button
    generate: gr.Button
    interrupt: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    progress: gr.Markdown
    infotexts: gr.State
    seeds: gr.State
    styles: gr.Dropdown
    styles_refresh: gr.Button
    presets: presets_panel.PresetGallery
    manager: presets_panel.PresetManager
    loras: lora_panel.LoraPicker
    postprocess: gr.CheckboxGroup | None = None  # extension post-processors (None when none is loaded)
    backend: gr.Radio | None = None  # auto | diffusers | onnx
    decoder: gr.Radio | None = None  # final decode: vae | taesd
    preview_every: gr.Slider | None = None  # live TAESD preview every N steps (0 = off)
    send_img2img: gr.Button | None = None  # the selected image to the img2img / Inpaint tab (wired by the page)
    send_inpaint: gr.Button | None = None
    selected: gr.State | None = None  # the gallery's selected index
    hires_enable: gr.Checkbox | None = None  # hires fix: first pass, upscale, second pass img2img
    hires_upscaler: gr.Dropdown | None = None
    hires_scale: gr.Slider | None = None
    hires_steps: gr.Slider | None = None
    hires_denoise: gr.Slider | None = None

    @property
    def hires_inputs(self) -> list:
        """The hires fix accordion's inputs (enable, upscaler, scale, steps, denoise), after the run options."""
        return [self.hires_enable, self.hires_upscaler, self.hires_scale, self.hires_steps, self.hires_denoise]

    @property
    def run_options(self) -> list:
        """Backend, final decoder and preview interval: the first inputs of the page's generate click."""
        return [self.backend, self.decoder, self.preview_every]

    @property
    def params(self) -> list:
        """The inputs of the generate handler, in PARAM_FIELDS order."""
        return [getattr(self, name) for name in PARAM_FIELDS]

    @property
    def family_outputs(self) -> list:
        """What :func:`family_updates` resets when the model family changes."""
        return [self.sampler, self.steps, self.cfg_scale, self.width, self.height, self.clip_skip]


def family_updates(info: FamilyInfo) -> tuple:
    """Updates for :attr:`Txt2ImgTab.family_outputs`: the family's samplers and defaults."""
    return (
        gr.Dropdown(choices=list(info.samplers), value=info.default_sampler),
        gr.Slider(value=info.steps),
        gr.Slider(value=info.cfg),
        gr.Slider(value=info.width, minimum=info.min_side, maximum=info.max_side),
        gr.Slider(value=info.height, minimum=info.min_side, maximum=info.max_side),
        gr.Slider(value=1, interactive=info.supports_clip_skip),
    )


def updates_from_fields(fields: dict, samplers: tuple[str, ...]) -> tuple[list, list[str]]:
    """Updates for :attr:`Txt2ImgTab.params` from GenerationRequest fields (e.g. parsed infotext).

    Fields that are absent stay as they are; a sampler the current family lacks is skipped and
    reported in the second return value.
    """
    skipped: list[str] = []
    updates = []
    for name in PARAM_FIELDS:
        value = fields.get(name)
        if value is None:
            updates.append(gr.skip())
        elif name == "sampler" and value not in samplers:
            skipped.append(value)
            updates.append(gr.skip())
        else:
            updates.append(value)
    return updates, skipped


def _number(name: str, value, default, kind=int):
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InvalidRequest(name, Message("rule.number")) from None
    if kind is int and number != float(value):
        raise InvalidRequest(name, Message("rule.whole"))
    return number


def request_from_inputs(prompt, negative_prompt, sampler, steps, cfg_scale, width, height,
                        seed, batch_size, batch_count, clip_skip, styles=None,
                        preset=None, loras=None, postprocess=None, *, backend=None, decoder=None,
                        preview_every=None, hires=None) -> GenerationRequest:
    """A GenerationRequest from the page's values; empty fields mean the family default.

    ``preset``: the active preset's id (the engine puts the prompt into its template);
    ``styles``: names from styles.csv, applied by the engine in order;
    ``loras``: ``(name, weight)`` pairs or the API's ``[[name, weight], ...]`` (see
    :func:`lora_panel.api_loras`), applied besides any ``<lora:…>`` tags in the prompt;
    ``postprocess``: ids of extension post-processors to run on each image;
    ``backend`` (auto | diffusers | onnx), ``decoder`` (vae | taesd), ``preview_every`` (steps, 0 = off);
    ``hires``: the hires fix accordion's ``(enable, upscaler, scale, second-pass steps, denoise)`` (None: off).
    """
    return _with_hires(GenerationRequest(
        prompt=prompt or "",
        negative_prompt=negative_prompt or "",
        sampler=sampler or None,
        steps=_number("steps", steps, None),
        cfg_scale=_number("cfg_scale", cfg_scale, None, float),
        width=_number("width", width, None),
        height=_number("height", height, None),
        seed=_number("seed", seed, -1),
        batch_size=_number("batch_size", batch_size, 1),
        batch_count=_number("batch_count", batch_count, 1),
        clip_skip=_number("clip_skip", clip_skip, 1),
        preset=preset or None,
        styles=_names(styles),
        loras=lora_panel.api_loras(loras),
        postprocess=_names(postprocess),
        backend=backend or "auto",
        decoder=decoder or "vae",
        preview_every=_number("preview_every", preview_every, 0),
    ), hires)


def _with_hires(req: GenerationRequest, hires) -> GenerationRequest:
    if not hires or not hires[0]:
        return req
    _enable, upscaler, scale, steps, denoise = (list(hires) + [None] * 5)[:5]
    return replace(req, enable_hr=True, hr_upscaler=upscaler or "Latent",
                   hr_scale=_number("hr_scale", scale, 2.0, float),
                   hr_second_pass_steps=_number("hr_second_pass_steps", steps, 0),
                   hr_denoising_strength=_number("hr_denoising_strength", denoise, 0.7, float))


def _names(styles) -> list[str]:
    if not styles:
        return []
    if isinstance(styles, str):
        styles = [styles]
    return [str(name) for name in styles if name]


def progress_text(t: Translator, engine, job) -> str:
    queued = queued_text(t, engine, job)
    if queued is not None:
        return queued
    p = job.progress
    if isinstance(p.phase, Message):  # e.g. a missing TAESD being fetched: "fetching TAESD … 1.2/9.8 MB"
        return message_text(t, p.phase)
    if p.phase == "hires":
        return t("progress.hires", step=p.step, total=p.total)
    if p.phase == "denoising" or (p.total and p.phase not in ("saving", "decoding")):
        return t("progress.step", step=p.step, total=p.total)
    key = {"loading": "progress.loading", "encoding": "progress.encoding",
           "decoding": "progress.decoding", "saving": "progress.saving"}.get(p.phase, "progress.starting")
    return t(key)


def _with_parameters(image, infotext: str):
    """A copy of ``image`` carrying its infotext, so the gallery's PNG download keeps it."""
    copy = image.copy()
    copy.info["parameters"] = infotext
    return copy


def make_generate(engine, t: Translator, poll_s: float = POLL_S):
    """The generate handler: submit, yield progress every ``poll_s``, then the images and infotext.

    Inputs: :data:`PARAM_FIELDS`, then the selected styles, the active preset id and the LoRAs (all
    optional, so API callers that send only the eleven fields keep working). Yields ``(gallery, infotext,
    progress, infotexts_state, seeds_state)``. If the caller goes away before the job ends, the job
    is cancelled.
    """

    settings = getattr(engine, "settings", None)
    default_backend = getattr(settings, "backend", "auto")
    default_preview = getattr(settings, "preview_every", 0)

    def generate(prompt, negative_prompt, sampler, steps, cfg_scale, width, height,
                 seed, batch_size, batch_count, clip_skip, styles=None, preset=None, loras=None,
                 postprocess=None, backend=None, decoder=None, preview_every=None, hires=None):
        try:
            request = request_from_inputs(
                prompt, negative_prompt, sampler, steps, cfg_scale, width, height, seed, batch_size,
                batch_count, clip_skip, styles, preset, loras, postprocess, backend=backend or default_backend,
                decoder=decoder, preview_every=default_preview if preview_every is None else preview_every,
                hires=hires)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        yield from run_request(engine, t, request, poll_s)

    return generate


def run_request(engine, t: Translator, request: GenerationRequest, poll_s: float = POLL_S):
    """Submit ``request`` and stream ``(gallery, infotext, progress, infotexts, seeds)`` updates."""
    try:
        job = engine.generate(request)
    except VisageError as exc:
        raise ui_error(t, exc) from None
    last_text, last_preview = None, None
    try:
        while not job.finished:
            text = progress_text(t, engine, job)
            preview = job.progress.preview
            if text != last_text or preview is not last_preview:
                gallery = [preview] if preview is not None and preview is not last_preview else gr.skip()
                last_text, last_preview = text, preview
                yield gallery, gr.skip(), text, gr.skip(), gr.skip()
            time.sleep(poll_s)
    except GeneratorExit:  # the page went away (closed tab, cancelled event): drop the job
        job.cancel()
        raise
    try:
        result = job.wait(0)
    except Interrupted as exc:
        ui_warning(t, exc)
        yield gr.skip(), gr.skip(), t("progress.interrupted", step=exc.step, total=exc.total), \
            gr.skip(), gr.skip()
        return
    except Exception as exc:  # noqa: BLE001 - the job already logged it; a message, never a traceback
        raise ui_error(t, exc) from None
    images = [_with_parameters(im, text) for im, text in zip(result.images, result.infotexts)]
    images += result.images[len(images):]
    infotexts = list(result.infotexts)
    done = t("progress.done", count=len(result.images), seconds=f"{result.elapsed_s:.1f}")
    notes = [message_text(t, note) for note in (getattr(result, "notes", None) or [])]
    for note in notes:
        gr.Warning(note, title=t("progress.notes_title"))
    if notes:
        done += "\n\n" + "\n\n".join(t("progress.note", note=_markdown_text(note)) for note in notes)
    yield images, (infotexts[0] if infotexts else ""), done, infotexts, list(result.seeds)


def _markdown_text(text: str) -> str:
    """``text`` with the Markdown/HTML characters that could change it escaped (``_`` is left alone:
    within words, as in LoRA key names, it never makes emphasis)."""
    for ch in "\\`*[]<>":
        text = text.replace(ch, "\\" + ch)
    return text


def style_names(engine, t: Translator, *, warn: bool = False) -> list[str]:
    """The names in styles.csv; a broken file gives none (with a warning when ``warn``)."""
    try:
        return list(engine.styles())
    except VisageError as exc:
        if warn:
            ui_warning(t, exc)
        return []


def make_refresh_styles(engine, t: Translator):
    """Handler: read styles.csv again; keep the selected styles that still exist."""

    def refresh_styles(selected):
        names = style_names(engine, t, warn=True)
        keep = [name for name in (selected or []) if name in names]
        return gr.Dropdown(choices=names, value=keep, multiselect=True)

    return refresh_styles


def make_interrupt(engine, t: Translator):
    def interrupt() -> None:
        if engine.interrupt():
            ui_info(t, t("txt2img.interrupt_sent"))
        else:
            ui_info(t, t("txt2img.nothing_running"))
    return interrupt


def with_postprocess(handler):
    """The page's generate handler with the post-processor checkbox group as its first input."""

    def generate_with_postprocess(postprocess, *args):
        yield from lora_panel.wrap_generate(partial(handler, postprocess=postprocess))(*args)

    return generate_with_postprocess


def with_run_options(handler, postprocess: bool, hires: bool = False):
    """The page's generate click: backend, decoder and preview interval first, then (``hires``) the hires fix
    accordion's five inputs, then (when extensions offer post-processors) their checkbox group, then the usual
    inputs."""

    def generate_with_options(backend, decoder, preview_every, *args):
        extra = {}
        if hires:
            extra["hires"], args = tuple(args[:5]), args[5:]
        inner = partial(handler, backend=backend, decoder=decoder, preview_every=preview_every, **extra)
        yield from (with_postprocess(inner) if postprocess else lora_panel.wrap_generate(inner))(*args)

    return generate_with_options


def build_run_options(engine, t: Translator):
    """Backend, final decoder and live-preview interval (an accordion under the parameters)."""
    settings = getattr(engine, "settings", None)
    with gr.Accordion(t("txt2img.run_options"), open=False, elem_id="txt2img_run_options"):
        backend = gr.Radio([(t("txt2img.backend_auto"), "auto"), ("diffusers", "diffusers"),
                            ("ONNX Runtime", "onnx")], value=getattr(settings, "backend", "auto"),
                           label=t("txt2img.backend"), info=t("txt2img.backend_info"), elem_id="txt2img_backend")
        decoder = gr.Radio([(t("txt2img.decoder_vae"), "vae"), (t("txt2img.decoder_taesd"), "taesd")],
                           value="vae", label=t("txt2img.decoder"), elem_id="txt2img_decoder")
        preview_every = gr.Slider(0, 20, value=getattr(settings, "preview_every", 0), step=1,
                                  label=t("txt2img.preview_every"), info=t("txt2img.preview_every_info"),
                                  elem_id="txt2img_preview_every")
    return backend, decoder, preview_every


def build_hires(t: Translator) -> dict:
    """The "Hires fix" accordion: enable, upscaler, scale, second-pass steps and denoise (A1111's defaults)."""
    with gr.Accordion(t("txt2img.hires"), open=False, elem_id="txt2img_hires"):
        enable = gr.Checkbox(False, label=t("txt2img.hires_enable"), info=t("txt2img.hires_info"),
                             elem_id="txt2img_enable_hr")
        with gr.Row():
            upscaler = gr.Dropdown(list(HR_UPSCALERS), value=HR_UPSCALERS[0], label=t("txt2img.hires_upscaler"),
                                   elem_id="txt2img_hr_upscaler")
            scale = gr.Slider(1.0, MAX_HR_SCALE, value=2.0, step=0.05, label=t("txt2img.hires_scale"),
                              elem_id="txt2img_hr_scale")
        with gr.Row():
            steps = gr.Slider(0, MAX_STEPS, value=0, step=1, label=t("txt2img.hires_steps"),
                              info=t("txt2img.hires_steps_info"), elem_id="txt2img_hires_steps")
            denoise = gr.Slider(0.0, 1.0, value=0.7, step=0.01, label=t("txt2img.hires_denoise"),
                                elem_id="txt2img_hr_denoise")
    return dict(hires_enable=enable, hires_upscaler=upscaler, hires_scale=scale, hires_steps=steps,
                hires_denoise=denoise)


def build(engine, t: Translator, postprocessors=()) -> Txt2ImgTab:
    """Lay out the tab and wire its own events (generate, interrupt, seed buttons, gallery select).
    ``postprocessors``: the extensions' (:class:`modules.extensions.Postprocessor`), offered as checkboxes."""
    c = _build_prompt_row(engine, t)
    # presets and LoRAs head the parameter column, so the output gallery sits beside them, in view
    with gr.Row():
        with gr.Column(scale=1, elem_id="txt2img_params"):
            c.update(_build_params(engine, t, postprocessors))
        with gr.Column(scale=1, elem_id="txt2img_results"):
            c["progress"] = gr.Markdown("", elem_id="txt2img_progress")
            c["gallery"] = gr.Gallery(label=t("txt2img.gallery"), columns=2, height=512, format="png",
                                      object_fit="contain", buttons=["download", "fullscreen"],
                                      interactive=False, elem_id="txt2img_gallery")
            c["infotext"] = gr.Textbox(label=t("txt2img.infotext"), lines=4, interactive=False,
                                       buttons=["copy"], elem_id="txt2img_infotext")
            with gr.Row():
                c["send_img2img"] = gr.Button(t("img2img.send"), size="sm", elem_id="txt2img_send_img2img")
                c["send_inpaint"] = gr.Button(t("inpaint.send"), size="sm", elem_id="txt2img_send_inpaint")
    c["infotexts"], c["seeds"], c["selected"] = gr.State([]), gr.State([]), gr.State(0)
    tab = Txt2ImgTab(**c)
    _wire(engine, t, tab)
    return tab


def _build_prompt_row(engine, t: Translator) -> dict:
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox("", label=t("txt2img.prompt"), placeholder=t("txt2img.prompt_placeholder"),
                                lines=3, max_lines=12, elem_id="txt2img_prompt")
            negative = gr.Textbox("", label=t("txt2img.negative"), placeholder=t("txt2img.negative_placeholder"),
                                  lines=2, max_lines=8, elem_id="txt2img_neg_prompt")
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button(t("txt2img.generate"), variant="primary", elem_id="txt2img_generate")
            interrupt = gr.Button(t("txt2img.interrupt"), variant="stop", elem_id="txt2img_interrupt")
            with gr.Row(equal_height=True):
                styles = gr.Dropdown(choices=style_names(engine, t), value=[], multiselect=True,
                                     label=t("styles.label"), scale=4, min_width=120, elem_id="txt2img_styles")
                styles_refresh = gr.Button(t("styles.refresh"), scale=0, min_width=40)
    return dict(prompt=prompt, negative_prompt=negative, generate=generate, interrupt=interrupt, styles=styles,
                styles_refresh=styles_refresh)


def _build_params(engine, t: Translator, postprocessors) -> dict:
    """The parameter column: presets, LoRAs, sampling parameters, post-processors, run options, preset manager."""
    info = family_info(engine.family_of(None))
    c = dict(presets=presets_panel.build_gallery(engine, t), loras=lora_panel.build(engine, t))
    c["sampler"] = gr.Dropdown(choices=list(info.samplers), value=info.default_sampler, label=t("txt2img.sampler"),
                               allow_custom_value=True, elem_id="txt2img_sampler")
    c["steps"] = gr.Slider(1, MAX_STEPS, value=info.steps, step=1, label=t("txt2img.steps"), elem_id="txt2img_steps")
    with gr.Row():
        c["width"] = gr.Slider(info.min_side, info.max_side, value=info.width, step=8, label=t("txt2img.width"),
                               elem_id="txt2img_width")
        c["height"] = gr.Slider(info.min_side, info.max_side, value=info.height, step=8, label=t("txt2img.height"),
                                elem_id="txt2img_height")
    with gr.Row():
        c["batch_count"] = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label=t("txt2img.batch_count"))
        c["batch_size"] = gr.Slider(1, MAX_BATCH_SIZE, value=1, step=1, label=t("txt2img.batch_size"))
    c["cfg_scale"] = gr.Slider(0.0, 30.0, value=info.cfg, step=0.5, label=t("txt2img.cfg"))
    with gr.Row():
        c["seed"] = gr.Number(value=-1, precision=0, label=t("txt2img.seed"), info=t("txt2img.seed_info"),
                              scale=4, elem_id="txt2img_seed")
        c["random_seed"] = gr.Button(t("txt2img.random_seed"), scale=0, min_width=48)
        c["reuse_seed"] = gr.Button(t("txt2img.reuse_seed"), scale=0, min_width=48)
    c["clip_skip"] = gr.Slider(1, 12, value=1, step=1, label=t("txt2img.clip_skip"),
                               interactive=info.supports_clip_skip)
    c["postprocess"] = (gr.CheckboxGroup([(p.label(t.lang), p.id) for p in postprocessors], value=[],
                                         label=t("ext.postprocess"), elem_id="txt2img_postprocess")
                        if postprocessors else None)
    c.update(build_hires(t))
    c["backend"], c["decoder"], c["preview_every"] = build_run_options(engine, t)
    c["manager"] = presets_panel.build_manager(engine, t)
    return c


def _wire(engine, t: Translator, tab: Txt2ImgTab) -> None:
    outputs = [tab.gallery, tab.infotext, tab.progress, tab.infotexts, tab.seeds]
    handler = make_generate(engine, t)
    # the page sends the picked LoRA rows (names + every slider); the /generate endpoint takes the
    # eleven fields, then the styles and a [[name, weight], ...] list, so older API callers still work
    picker, postprocess = tab.loras, tab.postprocess
    click_inputs = [*tab.params, tab.styles, tab.presets.active, picker.picked, *picker.weights]
    api_inputs = [*tab.params, tab.styles, tab.presets.active, picker.api_loras]
    if postprocess is not None:  # extension post-processors: /generate takes their ids last
        click_inputs = [postprocess, *click_inputs]
        api_inputs.append(postprocess)
    click_fn = with_run_options(handler, postprocess is not None, hires=True)
    click_inputs = [*tab.run_options, *tab.hires_inputs, *click_inputs]
    tab.generate.click(click_fn, click_inputs, outputs, api_visibility="private", show_progress="minimal",
                       concurrency_limit=None)
    gr.on(triggers=[], fn=handler, inputs=api_inputs, outputs=outputs, api_name="generate", concurrency_limit=None)
    lora_panel.wire(engine, t, picker, tab.prompt)
    tab.styles_refresh.click(make_refresh_styles(engine, t), tab.styles, tab.styles, api_visibility="private",
                             show_progress="hidden")
    presets_panel.wire(engine, t, tab, handler)
    tab.interrupt.click(make_interrupt(engine, t), None, None, api_name="interrupt", queue=False)
    tab.random_seed.click(lambda: -1, None, tab.seed, api_visibility="private", queue=False)
    tab.reuse_seed.click(lambda s: s[0] if s else gr.skip(), tab.seeds, tab.seed, api_visibility="private",
                         queue=False)

    def on_select(texts: list, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return (texts[index] if 0 <= index < len(texts) else gr.skip()), index

    tab.gallery.select(on_select, tab.infotexts, [tab.infotext, tab.selected], api_visibility="private",
                       queue=False)
