"""The LoRA picker on the txt2img tab (A1111's extra networks, simplified). Torch-free.

A card list of the LoRA files (those usable with the current model first; the others greyed out with
the reason), a search box and a refresh button. A click on a usable card adds a row with a weight slider:
a fixed set of :data:`MAX_PICKED` hidden rows is made visible one by one. The rows go to the engine as
``GenerationRequest.loras``; "insert as tags" moves them into the prompt as ``<lora:name:w>`` tags instead.

Layout: :func:`build` only lays out; :func:`wire` connects the events once the prompt box exists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable

import gradio as gr

from modules.errors import InvalidRequest, VisageError
from modules.families import Family
from modules.lora import LoraInfo, compatibility_problem, format_lora_tag
from modules.messages import Message
from modules.ui.common import family_label, ui_error, ui_info
from modules.ui.i18n import Translator

#: how many LoRA rows the picker holds
MAX_PICKED = 8
DEFAULT_WEIGHT = 0.8
MIN_WEIGHT, MAX_WEIGHT, WEIGHT_STEP = -1.0, 2.0, 0.05
#: the largest weight the ``loras`` API input accepts (as the prompt tags)
API_MAX_WEIGHT = 100.0
#: card groups, in listing order
_SUITED, _UNKNOWN_FAMILY, _OTHER_FAMILY, _UNSUPPORTED = range(4)


@dataclass
class LoraRow:
    row: gr.Row
    weight: gr.Slider  # its label is the LoRA's name
    remove: gr.Button


@dataclass
class LoraPicker:
    search: gr.Textbox
    refresh: gr.Button
    summary: gr.Markdown
    cards: gr.Dataset
    ids: gr.State  # LoRA names in card order (the Dataset reports an index)
    picked: gr.State  # names of the visible rows, in row order
    rows: list[LoraRow]
    insert: gr.Button
    api_loras: gr.JSON  # hidden: the ``loras`` input of the /generate endpoint

    @property
    def weights(self) -> list[gr.Slider]:
        return [r.weight for r in self.rows]

    @property
    def row_outputs(self) -> list:
        """What :func:`row_updates` fills: the picked names, every row, every slider."""
        return [self.picked, *(r.row for r in self.rows), *self.weights]

    @property
    def listing_outputs(self) -> list:
        return [self.cards, self.ids, self.summary]


# -- plain helpers ---------------------------------------------------------------------------------

def lora_problem(t: Translator, info: LoraInfo, family: Family | str) -> str | None:
    """Why ``info`` cannot be used with a model of ``family`` (page language where we can), or None."""
    if not info.supported:
        return info.reason or t("lora.unsupported")
    if info.family is not None and Family(info.family) != Family(family):
        return t("lora.made_for", family=family_label(info.family, t))
    problem = compatibility_problem(info, family)
    if problem is None:
        return None
    prefix = f"LoRA '{info.name}': "
    return problem[len(prefix):] if problem.startswith(prefix) else problem


def _group(info: LoraInfo, problem: str | None) -> int:
    if not info.supported:
        return _UNSUPPORTED
    if problem:
        return _OTHER_FAMILY
    return _SUITED if info.family is not None else _UNKNOWN_FAMILY


def _matches(info: LoraInfo, query: str) -> bool:
    query = query.strip().lower()
    if not query:
        return True
    return any(query in (text or "").lower() for text in (info.name, info.rel_name, info.alias))


def ordered_loras(t: Translator, infos: list[LoraInfo], family: Family | str,
                  query: str = "") -> list[tuple[LoraInfo, str | None]]:
    """``(info, problem)`` for the LoRAs matching ``query``: those made for ``family`` first, then those
    of unknown family, then other families, then unsupported files; by name within each group."""
    rows = [(info, lora_problem(t, info, family)) for info in infos if _matches(info, query)]
    return sorted(rows, key=lambda r: (_group(*r), r[0].name.lower(), r[0].name))


def card_html(t: Translator, info: LoraInfo, problem: str | None) -> str:
    """One card: the name, family, rank and text-encoder flag; unusable LoRAs greyed out with the reason."""
    details = [family_label(info.family, t) if info.family else t("lora.unknown_family")]
    if info.rank:
        details.append(t("lora.rank", rank=info.rank))
    if info.has_text_encoder:
        details.append(t("lora.text_encoder"))
    style = "display:flex;flex-direction:column;min-height:2.2em"
    if problem:
        style += ";opacity:0.5"
    title = escape(str(info.path), quote=True)
    parts = [f'<div class="visage-lora" title="{title}" style="{style}">',
             f"<strong>{escape(info.name)}</strong>",
             f"<small>{escape(' · '.join(details))}</small>"]
    if problem:
        parts.append(f"<small>⛔ {escape(problem)}</small>")
    parts.append("</div>")
    return "".join(parts)


def listing(engine, t: Translator, query: str = "", *, refresh: bool = False) -> tuple[list, list[str], str]:
    """(Dataset samples, names in card order, summary line) for the current model family."""
    infos = list(engine.loras(refresh=refresh))
    family = engine.family_of(None)
    rows = ordered_loras(t, infos, family, query or "")
    samples = [[card_html(t, info, problem)] for info, problem in rows]
    names = [info.name for info, _ in rows]
    if not infos:
        summary = t("lora.none_found")
    else:
        usable = sum(1 for info in infos if lora_problem(t, info, family) is None)
        summary = t("lora.count", count=len(infos), usable=usable)
        if query and not rows:
            summary += " · " + t("lora.no_match", query=query.strip())
    return samples, names, summary


def listing_updates(engine, t: Translator, query: str = "", *, refresh: bool = False) -> tuple:
    """Updates for :attr:`LoraPicker.listing_outputs`."""
    samples, names, summary = listing(engine, t, query, refresh=refresh)
    return gr.Dataset(samples=samples), names, summary


def _weight(value) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        return DEFAULT_WEIGHT
    return weight if math.isfinite(weight) else DEFAULT_WEIGHT


def picked_loras(names, weights) -> list[tuple[str, float]]:
    """``(name, weight)`` for the visible rows (``weights``: every slider's value, in row order)."""
    names = list(names or [])[:MAX_PICKED]
    weights = list(weights or [])
    return [(name, _weight(weights[i]) if i < len(weights) else DEFAULT_WEIGHT) for i, name in enumerate(names)]


def row_updates(t: Translator, loras: list[tuple[str, float]]) -> tuple:
    """Updates for :attr:`LoraPicker.row_outputs`: rows for ``loras``, the rest hidden and reset."""
    loras = list(loras)[:MAX_PICKED]
    rows, sliders = [], []
    for i in range(MAX_PICKED):
        if i < len(loras):
            name, weight = loras[i]
            rows.append(gr.Row(visible=True))
            sliders.append(gr.Slider(value=weight, label=name))
        else:
            rows.append(gr.Row(visible=False))
            sliders.append(gr.Slider(value=DEFAULT_WEIGHT, label=t("lora.weight")))
    return ([name for name, _ in loras], *rows, *sliders)


def api_loras(value) -> list[tuple[str, float]]:
    """The ``loras`` input of ``/generate``: ``[[name, weight], ...]`` (or ``{"name", "weight"}`` objects,
    or bare names for weight 1). None or empty: no LoRAs. Raises InvalidRequest("loras", ...)."""
    if value in (None, "", [], {}):
        return []
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("loras", Message("rule.lora_pairs"))
    out = []
    for item in value:
        if isinstance(item, str):
            name, weight = item, 1.0
        elif isinstance(item, dict):
            name, weight = item.get("name"), item.get("weight", 1.0)
        elif isinstance(item, (list, tuple)) and len(item) in (1, 2):
            name, weight = item[0], (item[1] if len(item) == 2 else 1.0)
        else:
            raise InvalidRequest("loras", Message("rule.lora_pairs"))
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("loras", Message("rule.lora_pairs"))
        if isinstance(weight, bool):
            raise InvalidRequest("loras", Message("rule.lora_pairs"))
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise InvalidRequest("loras", Message("rule.lora_pairs")) from None
        if not math.isfinite(weight) or abs(weight) > API_MAX_WEIGHT:
            raise InvalidRequest("loras", Message("rule.weights_between", low=f"{-API_MAX_WEIGHT:g}", high=f"{API_MAX_WEIGHT:g}"))
        out.append((name.strip(), weight))
    return out


def insert_tags(prompt: str | None, loras: list[tuple[str, float]]) -> str:
    """``prompt`` with a ``<lora:name:w>`` tag appended for each LoRA (comma-separated)."""
    text = (prompt or "").rstrip()
    tags = ", ".join(format_lora_tag(name, round(weight, 4)) for name, weight in loras)
    if not tags:
        return prompt or ""
    if not text:
        return tags
    return f"{text} {tags}" if text.endswith((",", "，")) else f"{text}, {tags}"


# -- handlers ---------------------------------------------------------------------------------------

def make_pick(engine, t: Translator):
    """Handler for a click on a card: add a row for that LoRA (usable, not yet picked, room left)."""
    skip = (gr.skip(),) * (1 + 2 * MAX_PICKED)

    def pick_lora(index, names, picked, *weights):
        names = names or []
        if not isinstance(index, int) or not 0 <= index < len(names):
            return skip
        name = names[index]
        current = picked_loras(picked, weights)
        try:
            info = next((i for i in engine.loras() if i.name == name), None)
            family = engine.family_of(None)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        if info is None:
            gr.Warning(t("lora.gone", name=name), title=t("error.warning_title"))
            return skip
        problem = lora_problem(t, info, family)
        if problem:
            gr.Warning(t("lora.not_usable", name=name, reason=problem), title=t("error.warning_title"))
            return skip
        if any(n == name for n, _ in current):
            ui_info(t, t("lora.already", name=name))
            return skip
        if len(current) >= MAX_PICKED:
            gr.Warning(t("lora.full", n=MAX_PICKED), title=t("error.warning_title"))
            return skip
        return row_updates(t, [*current, (name, DEFAULT_WEIGHT)])

    return pick_lora


def make_remove(t: Translator, index: int):
    """Handler of row ``index``'s ✕ button: drop that row, move the rows below it up."""

    def remove_lora(picked, *weights):
        current = picked_loras(picked, weights)
        if not 0 <= index < len(current):
            return (gr.skip(),) * (1 + 2 * MAX_PICKED)
        return row_updates(t, current[:index] + current[index + 1:])

    return remove_lora


def make_insert(t: Translator):
    """Handler: move the picked LoRAs into the prompt as ``<lora:name:w>`` tags (the rows are cleared,
    so nothing is applied twice). Returns ``(prompt, *row updates)``."""

    def insert_lora_tags(prompt, picked, *weights):
        current = picked_loras(picked, weights)
        if not current:
            ui_info(t, t("lora.nothing_picked"))
            return (gr.skip(),) * (2 + 2 * MAX_PICKED)
        ui_info(t, t("lora.inserted", count=len(current)))
        return (insert_tags(prompt, current), *row_updates(t, []))

    return insert_lora_tags


def make_search(engine, t: Translator):
    def search_loras(query):
        return listing_updates(engine, t, query or "")
    return search_loras


def make_refresh(engine, t: Translator):
    """Handler: scan the LoRA folders again."""

    def refresh_loras(query):
        try:
            return listing_updates(engine, t, query or "", refresh=True)
        except VisageError as exc:
            raise ui_error(t, exc) from None

    return refresh_loras


def wrap_generate(generate: Callable):
    """The page's generate handler: the txt2img fields, styles and preset, then the picked names and
    every row's slider; the rows become the ``loras`` argument of ``generate``."""

    def generate_with_loras(prompt, negative_prompt, sampler, steps, cfg_scale, width, height, seed,
                            batch_size, batch_count, clip_skip, styles, preset, picked, *weights):
        yield from generate(prompt, negative_prompt, sampler, steps, cfg_scale, width, height, seed,
                            batch_size, batch_count, clip_skip, styles, preset, picked_loras(picked, weights))

    return generate_with_loras


# -- layout and wiring ----------------------------------------------------------------------------

def build(engine, t: Translator) -> LoraPicker:
    """The LoRA accordion (lay out only)."""
    samples, names, summary_text = listing(engine, t)
    with gr.Accordion(t("lora.title"), open=False, elem_id="txt2img_lora"):
        with gr.Row(equal_height=True):
            search = gr.Textbox("", label=t("lora.search"), placeholder=t("lora.search_placeholder"),
                                max_lines=1, scale=4, elem_id="txt2img_lora_search")
            refresh = gr.Button(t("lora.refresh"), scale=0, min_width=48, elem_id="txt2img_lora_refresh")
        summary = gr.Markdown(summary_text, elem_id="txt2img_lora_summary")
        cards = gr.Dataset(components=["html"], samples=samples, type="index", layout="gallery",
                           samples_per_page=48, label=t("lora.cards"), headers=[],
                           elem_id="txt2img_lora_cards")
        rows = []
        for i in range(MAX_PICKED):
            with gr.Row(visible=False, equal_height=True, elem_id=f"txt2img_lora_row_{i}") as row:
                weight = gr.Slider(MIN_WEIGHT, MAX_WEIGHT, value=DEFAULT_WEIGHT, step=WEIGHT_STEP,
                                   label=t("lora.weight"), scale=6)
                remove = gr.Button(t("lora.remove"), scale=0, min_width=40, size="sm")
            rows.append(LoraRow(row, weight, remove))
        insert = gr.Button(t("lora.insert_tags"), size="sm", elem_id="txt2img_lora_insert")
    api = gr.JSON(None, visible=False, label=t("lora.api_loras"))
    return LoraPicker(search, refresh, summary, cards, gr.State(names), gr.State([]), rows, insert, api)


def wire(engine, t: Translator, picker: LoraPicker, prompt: gr.Textbox) -> None:
    """Connect the cards, rows, search, refresh and tag insertion of ``picker``."""
    weights = picker.weights
    picker.cards.click(make_pick(engine, t), [picker.cards, picker.ids, picker.picked, *weights],
                       picker.row_outputs, api_visibility="private", queue=False, show_progress="hidden")
    for i, row in enumerate(picker.rows):
        row.remove.click(make_remove(t, i), [picker.picked, *weights], picker.row_outputs,
                         api_visibility="private", queue=False, show_progress="hidden")
    picker.insert.click(make_insert(t), [prompt, picker.picked, *weights], [prompt, *picker.row_outputs],
                        api_visibility="private", queue=False, show_progress="hidden")
    picker.search.input(make_search(engine, t), picker.search, picker.listing_outputs,
                        api_visibility="private", queue=False, show_progress="hidden")
    picker.refresh.click(make_refresh(engine, t), picker.search, picker.listing_outputs,
                         api_visibility="private", show_progress="hidden")


def wire_family_change(engine, t: Translator, picker: LoraPicker, event) -> None:
    """After ``event`` (a model switch, refresh or page load): re-sort the cards for the new family."""
    event.then(make_search(engine, t), picker.search, picker.listing_outputs, api_visibility="private",
               show_progress="hidden")
