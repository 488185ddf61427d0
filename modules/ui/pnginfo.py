"""The PNG Info tab: drop an image, read its A1111 parameters, send them to txt2img. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.errors import VisageError
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters
from modules.ui.common import ui_error
from modules.ui.i18n import Translator


@dataclass
class PngInfoTab:
    image: gr.Image
    parameters: gr.Textbox
    fields: gr.Dataframe
    message: gr.Markdown
    send: gr.Button
    send_img2img: gr.Button | None = None  # the photo and its prompts to img2img / Inpaint (wired by the page)
    send_inpaint: gr.Button | None = None


def parsed_rows(t: Translator, text: str) -> list[list[str]]:
    """``[field, value]`` rows: prompt, negative prompt, then every ``Key: value`` pair."""
    prompt, negative, params = parse_infotext(text)
    rows = [[t("pnginfo.prompt"), prompt], [t("pnginfo.negative"), negative]]
    rows += [[key, value] for key, value in params.items()]
    return rows


def make_read(t: Translator):
    """Handler: image path -> (parameters text, parsed rows, message)."""

    def read(image_path: str | None):
        if not image_path:
            return "", [], ""
        try:
            text = read_png_parameters(image_path)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        if not text:
            return "", [], t("pnginfo.none")
        return text, parsed_rows(t, text), ""

    return read


def build(engine, t: Translator) -> PngInfoTab:
    """Lay out the tab and wire reading; the send button is wired by the page (it spans tabs)."""
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label=t("pnginfo.image"), type="filepath", image_mode=None,
                             sources=["upload", "clipboard"], height=512, elem_id="pnginfo_image")
        with gr.Column(scale=1):
            message = gr.Markdown("")
            parameters = gr.Textbox(label=t("pnginfo.parameters"), lines=6, interactive=False,
                                    buttons=["copy"])
            fields = gr.Dataframe(headers=[t("pnginfo.field"), t("pnginfo.value")], value=[],
                                  label=t("pnginfo.fields"), interactive=False, wrap=True,
                                  column_count=2)
            with gr.Row():
                send = gr.Button(t("pnginfo.send"), variant="primary")
                send_img2img = gr.Button(t("img2img.send"), elem_id="pnginfo_send_img2img")
                send_inpaint = gr.Button(t("inpaint.send"), elem_id="pnginfo_send_inpaint")
    image.change(make_read(t), image, [parameters, fields, message], api_name="png_info")
    return PngInfoTab(image, parameters, fields, message, send, send_img2img, send_inpaint)
