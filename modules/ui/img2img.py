"""The img2img and Inpaint tabs: a photo in, portraits out. Torch-free.

Both tabs send a :class:`~modules.generation.params.GenerationRequest` with an init image (and, for Inpaint, a
mask drawn on the photo with Gradio's image editor or uploaded); the engine picks the capability from it
(``Engine.prepare``) and checks the fields (denoise range, mask size, …) as for the API. The preset dropdown and
``<lora:name:weight>`` tags in the prompt work as in txt2img.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr
from PIL import Image, ImageChops

from modules.errors import VisageError
from modules.faces.detailer import DetailerSettings
from modules.families import family_info
from modules.generation.params import MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_STEPS
from modules.ui.common import POLL_S, ui_error
from modules.ui.i18n import Translator
from modules.ui.txt2img import make_interrupt, request_from_inputs, run_request

IMG2IMG, INPAINT = "img2img", "inpaint"
#: A1111's resize modes and masked-content choices, in their numeric order
RESIZE_KEYS = ("img2img.resize_just", "img2img.resize_crop", "img2img.resize_fill")
FILL_KEYS = ("inpaint.fill_fill", "inpaint.fill_original", "inpaint.fill_noise", "inpaint.fill_nothing")


@dataclass
class ImageTab:
    mode: str
    image: gr.components.Component  # gr.Image (img2img) or gr.ImageEditor (inpaint)
    mask_upload: gr.Image | None
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    preset: gr.Dropdown
    generate: gr.Button
    interrupt: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    progress: gr.Markdown
    inputs: list  # the handler's inputs after the image and the uploaded mask, in order


def editor_mask(value) -> tuple[Image.Image | None, Image.Image | None]:
    """(photo, mask) from the image editor's value: the mask is white wherever a layer was painted."""
    if value is None:
        return None, None
    if isinstance(value, Image.Image):
        return value, None
    background = value.get("background")
    layers = [layer for layer in (value.get("layers") or []) if isinstance(layer, Image.Image)]
    if not isinstance(background, Image.Image):
        return None, None
    mask = None
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, Image.Resampling.NEAREST)
        mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    if mask is not None and mask.getbbox() is None:
        mask = None  # nothing painted
    return background.convert("RGB"), mask


def make_generate(engine, t: Translator, mode: str, poll_s: float = POLL_S):
    """Handler: (image or editor value, uploaded mask, prompt, negative, preset, sampler, steps, cfg, seed,
    batch size, batch count, denoise, resize mode, [Inpaint: mask blur, only masked, padding, masked content,
    invert], then the face detailer's enable, prompt, denoise, confidence) -> yields (gallery, infotext, progress)
    until the job ends."""

    def generate(image, mask_upload, prompt, negative, preset, sampler, steps, cfg, seed, batch_size, batch_count,
                 denoise, resize_mode, *rest):
        options, face = (rest[:5], rest[5:]) if mode == INPAINT else ((), rest)
        mask_blur, only_masked, padding, fill, invert = options or (4, False, 32, 1, False)
        photo, drawn = editor_mask(image)
        mask = mask_upload.convert("L") if isinstance(mask_upload, Image.Image) else drawn
        if photo is None:
            raise gr.Error(t("img2img.no_image"), title=t("error.title"))
        if mode == INPAINT and mask is None:
            raise gr.Error(t("inpaint.no_mask"), title=t("error.title"))
        try:
            base = request_from_inputs(prompt, negative, sampler, steps, cfg, None, None, seed, batch_size,
                                       batch_count, 1, None, preset)
            request = replace(base, init_image=photo, mask=mask if mode == INPAINT else None,
                              denoising_strength=float(denoise), resize_mode=int(resize_mode),
                              mask_blur=int(mask_blur), inpaint_full_res=bool(only_masked),
                              inpaint_full_res_padding=int(padding), inpainting_fill=int(fill),
                              inpainting_mask_invert=bool(invert), detailer=detailer_from_inputs(*face))
        except (VisageError, TypeError, ValueError) as exc:
            raise ui_error(t, exc) from None
        for gallery, infotext, progress, _texts, _seeds in run_request(engine, t, request, poll_s):
            yield gallery, infotext, progress

    return generate


def detailer_from_inputs(enabled=False, prompt="", denoise=0.4, confidence=0.3) -> DetailerSettings | None:
    """The Face detailer accordion's values -> the request's ``detailer`` (None when off)."""
    if not enabled:
        return None
    return DetailerSettings(prompt=prompt or "", denoise=float(denoise), confidence=float(confidence))


def _detailer_options(t: Translator, mode: str) -> list:
    with gr.Accordion(t("detailer.title"), open=False):
        enabled = gr.Checkbox(False, label=t("detailer.enable"), info=t("detailer.enable_info"),
                              elem_id=f"{mode}_detailer_enable")
        prompt = gr.Textbox("", label=t("detailer.prompt"), placeholder=t("detailer.prompt_placeholder"), lines=2,
                            elem_id=f"{mode}_detailer_prompt")
        with gr.Row():
            denoise = gr.Slider(0.01, 1.0, value=0.4, step=0.01, label=t("detailer.denoise"))
            confidence = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label=t("detailer.confidence"))
    return [enabled, prompt, denoise, confidence]


def _inpaint_options(t: Translator) -> list:
    with gr.Accordion(t("inpaint.options"), open=True):
        with gr.Row():
            mask_blur = gr.Slider(0, 64, value=4, step=1, label=t("inpaint.mask_blur"))
            padding = gr.Slider(0, 256, value=32, step=4, label=t("inpaint.padding"))
        with gr.Row():
            only_masked = gr.Checkbox(False, label=t("inpaint.only_masked"))
            invert = gr.Checkbox(False, label=t("inpaint.invert"))
        fill = gr.Radio([(t(k), i) for i, k in enumerate(FILL_KEYS)], value=1, label=t("inpaint.fill"))
    return [mask_blur, only_masked, padding, fill, invert]


def build(engine, t: Translator, mode: str) -> ImageTab:
    """Lay out the img2img or Inpaint tab and wire its Generate and Stop buttons."""
    info = family_info(engine.family_of(None))
    with gr.Row():
        with gr.Column(scale=1):
            if mode == INPAINT:
                image = gr.ImageEditor(type="pil", label=t("inpaint.image"), brush=gr.Brush(colors=["#ffffff"]),
                                       elem_id=f"{mode}_image")
                mask_upload = gr.Image(type="pil", label=t("inpaint.mask_upload"), image_mode="L", height=160,
                                       elem_id=f"{mode}_mask")
            else:
                image = gr.Image(type="pil", label=t("img2img.image"), elem_id=f"{mode}_image")
                mask_upload = None
            prompt = gr.Textbox("", label=t("txt2img.prompt"), placeholder=t("txt2img.prompt_placeholder"),
                                lines=3, elem_id=f"{mode}_prompt")
            negative = gr.Textbox("", label=t("txt2img.negative"), lines=2, elem_id=f"{mode}_neg_prompt")
            preset = gr.Dropdown([("—", "")] + [(p.name.get(t.lang) or p.id, p.id) for p in engine.presets()],
                                 value="", label=t("img2img.preset"))
            denoise = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label=t("img2img.denoise"),
                                elem_id=f"{mode}_denoise")
            resize = gr.Radio([(t(k), i) for i, k in enumerate(RESIZE_KEYS)], value=0, label=t("img2img.resize"))
            extra = _inpaint_options(t) if mode == INPAINT else []
            extra += _detailer_options(t, mode)
            with gr.Row():
                sampler = gr.Dropdown(list(info.samplers), value=info.default_sampler, label=t("txt2img.sampler"),
                                      allow_custom_value=True)
                steps = gr.Slider(1, MAX_STEPS, value=info.steps, step=1, label=t("txt2img.steps"))
            with gr.Row():
                cfg = gr.Slider(0.0, 30.0, value=info.cfg, step=0.5, label=t("txt2img.cfg"))
                seed = gr.Number(value=-1, precision=0, label=t("txt2img.seed"))
            with gr.Row():
                batch_count = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label=t("txt2img.batch_count"))
                batch_size = gr.Slider(1, MAX_BATCH_SIZE, value=1, step=1, label=t("txt2img.batch_size"))
        with gr.Column(scale=1):
            with gr.Row():
                generate = gr.Button(t("txt2img.generate"), variant="primary", elem_id=f"{mode}_generate")
                interrupt = gr.Button(t("txt2img.interrupt"), variant="stop")
            progress = gr.Markdown("", elem_id=f"{mode}_progress")
            gallery = gr.Gallery(label=t("txt2img.gallery"), columns=2, height=512, format="png",
                                 object_fit="contain", interactive=False, elem_id=f"{mode}_gallery")
            infotext = gr.Textbox(label=t("txt2img.infotext"), lines=4, interactive=False, buttons=["copy"])
    inputs = [prompt, negative, preset, sampler, steps, cfg, seed, batch_size, batch_count, denoise, resize, *extra]
    tab = ImageTab(mode, image, mask_upload, prompt, negative, preset, generate, interrupt, gallery, infotext,
                   progress, inputs)
    mask_input = mask_upload if mask_upload is not None else gr.State(None)
    generate.click(make_generate(engine, t, mode), [image, mask_input, *inputs], [gallery, infotext, progress],
                   api_name=mode, show_progress="minimal", concurrency_limit=None)
    interrupt.click(make_interrupt(engine, t), None, None, api_visibility="private", queue=False)
    return tab
