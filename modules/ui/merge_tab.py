"""The Merge tab: fuse LoRAs into a base model and save a new model. Torch-free.

The merge is a job on the engine's one queue (``engine.merge_lora``); the handler shows its stages
("Fusing 3/6 …") until it ends. The page chains a refresh of the checkpoint lists onto a successful merge
(:attr:`MergeTab.merge_event`), so the new model can be picked at once.

``/merge_lora`` takes ``base, loras, out_name, fmt, dtype`` with ``loras`` as
``[[name, unet_weight, te_weight], ...]`` and returns ``(message, {name, title, location, format, family})``
(``location``, not ``path``: gradio_client would take a dict with a ``path`` for a file to download).
A merge keeps running when the page goes away: its result is a file on disk either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr

from modules.errors import Interrupted, InvalidRequest, VisageError
from modules.messages import Message
from modules.registry.entry import ModelFormat
from modules.ui.common import (
    POLL_S, current_model_name, family_label, progress_texts, queued_text, ui_error, ui_info, ui_warning,
)
from modules.ui.i18n import Translator
from modules.ui.lora_panel import API_MAX_WEIGHT, lora_problem

#: LoRA rows on the tab
MERGE_ROWS = 4
MIN_WEIGHT, MAX_WEIGHT, WEIGHT_STEP, DEFAULT_WEIGHT = -2.0, 2.0, 0.05, 1.0
FORMATS = (ModelFormat.SINGLE_FILE, ModelFormat.DIFFUSERS)
DTYPES = ("fp16", "bf16", "fp32")
#: what the merge handler yields: (progress markdown, result JSON)
MERGE_OUTPUTS = 2


@dataclass
class MergeRow:
    lora: gr.Dropdown
    unet_weight: gr.Slider
    te_weight: gr.Slider


@dataclass
class MergeTab:
    base: gr.Dropdown
    rows: list[MergeRow]
    lora_note: gr.Markdown
    refresh_loras: gr.Button
    out_name: gr.Textbox
    fmt: gr.Radio
    dtype: gr.Radio
    run: gr.Button
    progress: gr.Markdown
    result: gr.JSON
    api_loras: gr.JSON  # hidden: the ``loras`` input of /merge_lora
    #: the page chains the checkpoint-list refresh onto this (the button's merge event)
    merge_event: object = None

    @property
    def row_inputs(self) -> list:
        return row_inputs(self.rows)

    @property
    def lora_outputs(self) -> list:
        return [*(r.lora for r in self.rows), self.lora_note]


# -- plain helpers ---------------------------------------------------------------------------------

def row_inputs(rows) -> list:
    """The components of LoRA rows, flat: name, U-Net weight, text-encoder weight, row after row."""
    return [c for r in rows for c in (r.lora, r.unet_weight, r.te_weight)]


def base_entries(engine) -> list:
    """Models a LoRA can be merged into: supported, not edge packages."""
    return [e for e in engine.models() if e.supported and e.format != ModelFormat.EDGE]


def base_choices(engine) -> list[tuple[str, str]]:
    return [(e.title, e.name) for e in base_entries(engine)]


def default_base(engine) -> str | None:
    entries = base_entries(engine)
    current = current_model_name(engine, entries)
    return current or (entries[0].name if entries else None)


def lora_choices(engine, t: Translator, base: str | None) -> list[tuple[str, str]]:
    """``(label, name)`` of the LoRAs that can be merged into ``base`` (all supported ones when the base
    is unknown); label ``name · family``."""
    try:
        family = engine.family_of(base) if base else None
    except VisageError:
        family = None
    choices = []
    for info in sorted(engine.loras(), key=lambda i: (i.name.lower(), i.name)):
        if not info.supported or (family is not None and lora_problem(t, info, family)):
            continue
        fam = family_label(info.family, t) if info.family else t("lora.unknown_family")
        choices.append((f"{info.name} · {fam}", info.name))
    return choices


def lora_updates(engine, t: Translator, base: str | None, selected=()) -> tuple:
    """(every row's dropdown, the note under them) for ``base``; selections still offered are kept."""
    choices = lora_choices(engine, t, base)
    names = {name for _label, name in choices}
    selected = list(selected) + [None] * MERGE_ROWS
    rows = tuple(gr.Dropdown(choices=choices, value=selected[i] if selected[i] in names else None)
                 for i in range(MERGE_ROWS))
    note = gr.Markdown(t("merge.no_loras"), visible=True) if not choices else gr.Markdown("", visible=False)
    return (*rows, note)


def _float(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def rows_from_inputs(values) -> list[list]:
    """``[[name, unet, te], ...]`` from the flattened row inputs (rows without a LoRA are skipped)."""
    values = list(values)
    rows = []
    for i in range(0, len(values) - 2, 3):
        name, unet, te = values[i:i + 3]
        if name:
            rows.append([str(name), _float(unet, DEFAULT_WEIGHT), _float(te, DEFAULT_WEIGHT)])
    return rows


def api_rows(value) -> list[tuple[str, float, float]]:
    """The ``loras`` input of ``/merge_lora``: ``[[name, unet_weight, te_weight], ...]`` (``[name, w]`` sets
    both weights, a bare name weight 1). Raises InvalidRequest("loras", ...)."""
    rule = Message("rule.lora_rows")
    if value in (None, "", [], {}):
        return []
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("loras", rule)
    out = []
    for item in value:
        if isinstance(item, str):
            item = [item]
        if isinstance(item, dict):
            item = [item.get("name"), item.get("unet_weight", item.get("weight", 1.0)),
                    item.get("te_weight", item.get("weight", 1.0))]
        if not isinstance(item, (list, tuple)) or not 1 <= len(item) <= 3:
            raise InvalidRequest("loras", rule)
        name = item[0]
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("loras", rule)
        raw = list(item[1:]) or [1.0]
        if len(raw) == 1:
            raw.append(raw[0])
        weights = []
        for w in raw:
            if isinstance(w, bool):
                raise InvalidRequest("loras", rule)
            try:
                w = float(w)
            except (TypeError, ValueError):
                raise InvalidRequest("loras", rule) from None
            if not math.isfinite(w) or abs(w) > API_MAX_WEIGHT:
                raise InvalidRequest("loras", Message("rule.weights_between", low=f"{-API_MAX_WEIGHT:g}", high=f"{API_MAX_WEIGHT:g}"))
            weights.append(w)
        out.append((name.strip(), weights[0], weights[1]))
    return out


def phase_text(t: Translator, phase: str) -> str:
    """A merge job's ``progress.phase`` in words."""
    if phase in ("loading", "switching"):
        return t("merge.phase_loading_model")
    if not phase.startswith("merging: "):
        return t("merge.phase_starting")
    label = phase[len("merging: "):]
    for prefix in ("reusing loaded LoRA ", "loading LoRA "):
        if label.startswith(prefix):
            return t("merge.phase_loading_lora", name=label[len(prefix):])
    if label.startswith("converting to "):
        return t("merge.phase_converting", dtype=label[len("converting to "):])
    if label.startswith("writing "):
        return t("merge.phase_writing", name=label[len("writing "):])
    key = {"hashing": "merge.phase_hashing", "fusing": "merge.phase_fusing", "done": "merge.phase_done"}.get(label)
    return t(key) if key else label


def progress_text(t: Translator, engine, job) -> str:
    queued = queued_text(t, engine, job)
    if queued is not None:
        return queued
    p = job.progress
    phase = phase_text(t, p.phase)
    if p.total:
        return t("merge.progress", phase=phase, step=p.step, total=p.total)
    return phase + " …"


def result_data(entry) -> dict:
    """The merged model as plain data (the API's second value)."""
    family = getattr(entry.family, "value", entry.family)
    return {"name": entry.name, "title": entry.title, "location": str(entry.path), "format": str(entry.format),
            "family": family}


# -- handlers ---------------------------------------------------------------------------------------

def make_merge(engine, t: Translator, poll_s: float = POLL_S):
    """The merge handler: submit ``engine.merge_lora``, yield ``(progress, result)`` every ``poll_s`` until
    the job ends, then the written model. Errors become translated gr.Errors."""

    def merge(base, loras, out_name, fmt="single-file", dtype="fp16"):
        try:
            if not base:
                raise InvalidRequest("base", Message("rule.required"))
            rows = api_rows(loras)
            name = (out_name or "").strip() if isinstance(out_name, str) else ""
            if not name:
                raise InvalidRequest("out", Message("rule.required"))
            if not rows:
                raise InvalidRequest("loras", Message("rule.lora_nonzero"))
            job = engine.merge_lora(str(base), rows, name, fmt=fmt or FORMATS[0], dtype=dtype or DTYPES[0])
        except VisageError as exc:
            raise ui_error(t, exc) from None
        for text in progress_texts(job, lambda j: progress_text(t, engine, j), poll_s):
            yield text, gr.skip()
        try:
            entry = job.wait(0)
        except Interrupted as exc:
            ui_warning(t, exc)
            yield t("merge.interrupted", step=exc.step, total=exc.total), None
            return
        except Exception as exc:  # noqa: BLE001 - the job already logged it; a message, never a traceback
            raise ui_error(t, exc) from None
        ui_info(t, t("merge.saved", name=entry.name))
        yield t("merge.done", name=entry.name, path=str(entry.path)), result_data(entry)

    return merge


def wrap_merge(merge):
    """The page's handler: base, output name, format, dtype, then every row's (LoRA, U-Net, TE) inputs."""

    def merge_from_rows(base, out_name, fmt, dtype, *row_values):
        yield from merge(base, rows_from_inputs(row_values), out_name, fmt, dtype)

    return merge_from_rows


def make_base_change(engine, t: Translator):
    """Handler: a new base model -> the LoRA choices usable with its family (kept where still valid)."""

    def base_changed(base, *selected):
        return lora_updates(engine, t, base, selected)

    return base_changed


def make_refresh_loras(engine, t: Translator):
    """Handler: scan the LoRA folders again, then the choices for the current base."""

    def refresh_merge_loras(base, *selected):
        try:
            engine.loras(refresh=True)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        return lora_updates(engine, t, base, selected)

    return refresh_merge_loras


def model_list_update(engine) -> gr.Dropdown:
    """The base dropdown after the model list changed (e.g. a merge wrote a new model)."""
    return gr.Dropdown(choices=base_choices(engine))


# -- layout ------------------------------------------------------------------------------------------

def build(engine, t: Translator) -> MergeTab:
    """Lay out the tab and wire its own events (the page adds the checkpoint-list refresh)."""
    gr.Markdown(t("merge.intro"))
    base_value = default_base(engine)
    base = gr.Dropdown(choices=base_choices(engine), value=base_value, label=t("merge.base"),
                       elem_id="merge_base")
    choices = lora_choices(engine, t, base_value)
    rows = []
    for i in range(MERGE_ROWS):
        with gr.Row(equal_height=True):
            lora = gr.Dropdown(choices=choices, value=None, label=t("merge.lora", n=i + 1), scale=3,
                               elem_id=f"merge_lora_{i}")
            unet = gr.Slider(MIN_WEIGHT, MAX_WEIGHT, value=DEFAULT_WEIGHT, step=WEIGHT_STEP,
                             label=t("merge.unet_weight"), scale=2)
            te = gr.Slider(MIN_WEIGHT, MAX_WEIGHT, value=DEFAULT_WEIGHT, step=WEIGHT_STEP,
                           label=t("merge.te_weight"), scale=2)
        rows.append(MergeRow(lora, unet, te))
    with gr.Row():
        lora_note = gr.Markdown(t("merge.no_loras"), visible=not choices)
        refresh_loras = gr.Button(t("merge.refresh_loras"), size="sm", scale=0, min_width=160)
    with gr.Row():
        out_name = gr.Textbox("", label=t("merge.out_name"), placeholder=t("merge.out_placeholder"),
                              info=t("merge.out_info"), max_lines=1, scale=3, elem_id="merge_out_name")
        fmt = gr.Radio([(t("merge.format_single"), FORMATS[0]), (t("merge.format_diffusers"), FORMATS[1])],
                       value=FORMATS[0], label=t("merge.format"), scale=2)
        dtype = gr.Radio(list(DTYPES), value=DTYPES[0], label=t("merge.dtype"), scale=1)
    run = gr.Button(t("merge.run"), variant="primary", elem_id="merge_run")
    progress = gr.Markdown("", elem_id="merge_progress")
    result = gr.JSON(None, visible=False, label=t("merge.result"))
    api = gr.JSON(None, visible=False, label=t("merge.api_loras"))
    tab = MergeTab(base, rows, lora_note, refresh_loras, out_name, fmt, dtype, run, progress, result, api)

    handler = make_merge(engine, t)
    tab.merge_event = run.click(wrap_merge(handler), [base, out_name, fmt, dtype, *tab.row_inputs],
                                [progress, result], api_visibility="private", show_progress="minimal",
                                concurrency_limit=None)
    gr.on(triggers=[], fn=handler, inputs=[base, api, out_name, fmt, dtype], outputs=[progress, result],
          api_name="merge_lora", concurrency_limit=None)
    selected = [r.lora for r in rows]
    base.change(make_base_change(engine, t), [base, *selected], tab.lora_outputs, api_visibility="private",
                show_progress="hidden")
    refresh_loras.click(make_refresh_loras(engine, t), [base, *selected], tab.lora_outputs,
                        api_visibility="private", show_progress="hidden")
    return tab
