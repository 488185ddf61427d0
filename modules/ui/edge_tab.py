"""The Build-edge tab: turn an SD1.5 model (with LoRAs merged in) into an edge package. Torch-free.

The build is a job on the engine's one queue (``engine.build_edge``); the handler streams its stages
("Pruning 2/9 …") with a progress bar until it ends. The page chains a refresh of the checkpoint list onto
a successful build (:attr:`EdgeTab.build_event`): the package is listed as ``edge/NAME`` at once.

``/build_edge`` takes ``model, loras, prune, distill_steps, quantize, method, attention, full_vae, out_name``
(``loras`` as ``[[name, unet_weight, te_weight], ...]``) and returns ``(message, manifest summary)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.errors import Interrupted, InvalidRequest, VisageError
from modules.families import Family
from modules.messages import Message
from modules.registry.entry import ModelFormat
from modules.ui import merge_tab
from modules.ui.common import (
    POLL_S, current_model_name, progress_texts, queued_text, ui_error, ui_info, ui_warning,
)
from modules.ui.i18n import Translator

#: LoRA rows on the tab
EDGE_ROWS = 2
QUANTIZE = ("int8", "none")
METHODS = ("auto", "static", "dynamic")
ATTENTION = ("fused", "standard")
#: the build's stage labels (modules.edge.build) -> translation keys
STAGE_KEYS = {
    "merging LoRAs": "edge.stage_merge", "pruning": "edge.stage_prune", "distilling": "edge.stage_distill",
    "recording calibration inputs": "edge.stage_calibrate", "exporting text encoder": "edge.stage_export_te",
    "exporting U-Net": "edge.stage_export_unet", "exporting decoders": "edge.stage_export_decoders",
    "quantizing": "edge.stage_quantize", "writing package": "edge.stage_write", "done": "edge.stage_done",
}


@dataclass
class EdgeTab:
    model: gr.Dropdown
    rows: list[merge_tab.MergeRow]
    prune: gr.Slider
    distill_steps: gr.Number
    quantize: gr.Radio
    method: gr.Radio
    attention: gr.Radio
    full_vae: gr.Checkbox
    out_name: gr.Textbox
    run: gr.Button
    progress: gr.Markdown
    result: gr.JSON
    api_loras: gr.JSON  # hidden: the ``loras`` input of /build_edge
    #: the page chains the checkpoint-list refresh onto this (the button's build event)
    build_event: object = None

    @property
    def row_inputs(self) -> list:
        return merge_tab.row_inputs(self.rows)

    @property
    def option_inputs(self) -> list:
        return [self.prune, self.distill_steps, self.quantize, self.method, self.attention, self.full_vae,
                self.out_name]


# -- plain helpers ---------------------------------------------------------------------------------

def source_choices(engine) -> list[tuple[str, str]]:
    """Models an edge package can be built from: supported SD1.5 checkpoints (not packages themselves)."""
    return [(e.title, e.name) for e in engine.models()
            if e.supported and e.family is Family.SD15 and e.format != ModelFormat.EDGE]


def default_source(engine) -> str | None:
    names = [name for _title, name in source_choices(engine)]
    current = current_model_name(engine, [e for e in engine.models() if e.name in names])
    return current or (names[0] if names else None)


def stage_text(t: Translator, phase: str) -> str:
    """A build stage label in words: "distilling 3/20" keeps its counter."""
    head, _, rest = phase.partition(" ")
    for label, key in STAGE_KEYS.items():
        if phase == label:
            return t(key)
        if label == head and rest[:1].isdigit():
            return f"{t(key)} {rest}"
    return phase or t("edge.stage_starting")


def progress_text(t: Translator, engine, job) -> str:
    queued = queued_text(t, engine, job)
    if queued is not None:
        return queued
    p = job.progress
    if p.total:
        return t("edge.progress", stage=stage_text(t, p.phase), step=p.step, total=p.total)
    return stage_text(t, p.phase) + " …"


def build_options(loras, prune, distill_steps, quantize, method, attention, full_vae) -> dict:
    """The ``options`` of ``engine.build_edge`` as plain data (the engine makes them typed and checks them)."""
    try:
        prune_ratio = float(prune or 0.0)
        steps = int(distill_steps or 0)
    except (TypeError, ValueError):
        raise InvalidRequest("prune", Message("rule.number")) from None
    return {"loras": merge_tab.api_rows(loras), "prune": prune_ratio, "distill_steps": steps,
            "quantize": quantize or QUANTIZE[0], "method": method or METHODS[0],
            "attention": attention or ATTENTION[0], "full_vae": bool(full_vae)}


def summary(manifest: dict) -> dict:
    """What the page shows of a built package's manifest."""
    return {"name": manifest.get("name"), "source": manifest.get("source", {}).get("name"),
            "prune": manifest.get("prune", {}).get("ratio"),
            "quantization": manifest.get("quantization", {}).get("mode"),
            "unet": manifest.get("components", {}).get("unet", {}).get("precision"),
            "total_mib": round(manifest.get("total_bytes", 0) / 2**20, 1),
            "build_s": manifest.get("build", {}).get("seconds")}


# -- handlers ---------------------------------------------------------------------------------------

def make_build(engine, t: Translator, poll_s: float = POLL_S):
    """The build handler: submit ``engine.build_edge``, yield ``(progress, result)`` until the job ends."""

    def build_edge(model, loras, prune=0.0, distill_steps=0, quantize="int8", method="auto", attention="fused",
                   full_vae=False, out_name=""):
        try:
            if not model:
                raise InvalidRequest("model", Message("rule.required"))
            options = build_options(loras, prune, distill_steps, quantize, method, attention, full_vae)
            name = out_name.strip() if isinstance(out_name, str) and out_name.strip() else None
            job = engine.build_edge(str(model), options, name)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        for text in progress_texts(job, lambda j: progress_text(t, engine, j), poll_s):
            yield text, gr.skip()
        try:
            path = job.wait(0)
        except Interrupted as exc:
            ui_warning(t, exc)
            yield t("edge.interrupted"), None
            return
        except Exception as exc:  # noqa: BLE001 - the job already logged it; a message, never a traceback
            raise ui_error(t, exc) from None
        manifest = engine.edge_manifest(path)
        ui_info(t, t("edge.built", name=manifest.get("name", "")))
        yield t("edge.done", name=f"edge/{manifest.get('name', '')}", path=str(path)), summary(manifest)

    return build_edge


def wrap_build(build_edge):
    """The page's handler: model, the options, then every row's (LoRA, U-Net, TE) inputs."""

    def build_from_rows(model, prune, distill_steps, quantize, method, attention, full_vae, out_name, *rows):
        yield from build_edge(model, merge_tab.rows_from_inputs(rows), prune, distill_steps, quantize, method,
                              attention, full_vae, out_name)

    return build_from_rows


def make_source_change(engine, t: Translator):
    """Handler: a new source model -> the LoRA choices usable with it (kept where still valid)."""

    def source_changed(model, *selected):
        choices = merge_tab.lora_choices(engine, t, model)
        names = {name for _label, name in choices}
        return tuple(gr.Dropdown(choices=choices, value=v if v in names else None) for v in selected)

    return source_changed


def model_list_update(engine) -> gr.Dropdown:
    return gr.Dropdown(choices=source_choices(engine))


# -- layout ------------------------------------------------------------------------------------------

def build(engine, t: Translator) -> EdgeTab:
    """Lay out the tab and wire its own events (the page adds the checkpoint-list refresh)."""
    gr.Markdown(t("edge.intro"))
    source = default_source(engine)
    model = gr.Dropdown(choices=source_choices(engine), value=source, label=t("edge.model"), elem_id="edge_model")
    choices = merge_tab.lora_choices(engine, t, source)
    rows = []
    for i in range(EDGE_ROWS):
        with gr.Row(equal_height=True):
            lora = gr.Dropdown(choices=choices, value=None, label=t("merge.lora", n=i + 1), scale=3,
                               elem_id=f"edge_lora_{i}")
            unet = gr.Slider(merge_tab.MIN_WEIGHT, merge_tab.MAX_WEIGHT, value=merge_tab.DEFAULT_WEIGHT,
                             step=merge_tab.WEIGHT_STEP, label=t("merge.unet_weight"), scale=2)
            te = gr.Slider(merge_tab.MIN_WEIGHT, merge_tab.MAX_WEIGHT, value=merge_tab.DEFAULT_WEIGHT,
                           step=merge_tab.WEIGHT_STEP, label=t("merge.te_weight"), scale=2)
        rows.append(merge_tab.MergeRow(lora, unet, te))
    with gr.Row():
        prune = gr.Slider(0.0, 0.9, value=0.0, step=0.05, label=t("edge.prune"), info=t("edge.prune_info"),
                          elem_id="edge_prune")
        distill = gr.Number(value=0, precision=0, minimum=0, label=t("edge.distill"), info=t("edge.distill_info"))
    with gr.Row():
        quantize = gr.Radio([("INT8", "int8"), (t("edge.quantize_none"), "none")], value=QUANTIZE[0],
                            label=t("edge.quantize"))
        method = gr.Radio([(t("edge.method_auto"), "auto"), ("static QDQ", "static"), ("dynamic", "dynamic")],
                          value=METHODS[0], label=t("edge.method"))
        attention = gr.Radio([(t("edge.attention_fused"), "fused"), (t("edge.attention_standard"), "standard")],
                             value=ATTENTION[0], label=t("edge.attention"))
    with gr.Row():
        full_vae = gr.Checkbox(False, label=t("edge.full_vae"))
        out_name = gr.Textbox("", label=t("edge.out_name"), placeholder=t("edge.out_placeholder"), max_lines=1,
                              scale=3, elem_id="edge_out_name")
    run = gr.Button(t("edge.run"), variant="primary", elem_id="edge_run")
    progress = gr.Markdown("", elem_id="edge_progress")
    result = gr.JSON(None, label=t("edge.result"))
    api = gr.JSON(None, visible=False, label=t("merge.api_loras"))
    tab = EdgeTab(model, rows, prune, distill, quantize, method, attention, full_vae, out_name, run, progress,
                  result, api)

    handler = make_build(engine, t)
    tab.build_event = run.click(wrap_build(handler), [model, *tab.option_inputs, *tab.row_inputs],
                                [progress, result], api_visibility="private", show_progress="full",
                                concurrency_limit=None)
    gr.on(triggers=[], fn=handler, inputs=[model, api, *tab.option_inputs], outputs=[progress, result],
          api_name="build_edge", concurrency_limit=None)
    selected = [r.lora for r in rows]
    model.change(make_source_change(engine, t), [model, *selected], selected, api_visibility="private",
                 show_progress="hidden")
    return tab
