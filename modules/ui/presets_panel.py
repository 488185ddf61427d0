"""Presets on the txt2img tab: the one-click gallery, the active-preset chip, and preset management.

Torch-free. The page sends the user's own prompt plus ``preset=ID``; the engine puts the prompt
into the preset's template at generate time, so the prompt box is never expanded here.

Layout: :func:`build_gallery` (above the parameters) and :func:`build_manager` (an accordion under
them) only lay out; :func:`wire` connects them to the txt2img fields once the tab exists.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Callable

import gradio as gr
from PIL import Image

from modules.errors import InvalidRequest, VisageError
from modules.families import Family, family_info
from modules.messages import Message
from modules.presets import Preset, parse_preset
from modules.presets.schema import ID_RE, RANDOM_SEED
from modules.ui.common import family_label, ui_error, ui_info
from modules.ui import lora_panel
from modules.ui.i18n import Translator

#: txt2img fields a preset fills, in the order of the handlers' outputs
PRESET_FIELDS = ("sampler", "steps", "cfg_scale", "width", "height", "seed", "clip_skip")
#: the gallery's thumbnail box (pixels)
THUMB_SIZE = (96, 128)
#: what the generate handler yields per update (gallery, infotext, progress, infotexts, seeds)
RUN_OUTPUTS = 5


@dataclass
class PresetGallery:
    gallery: gr.Dataset
    ids: gr.State  # preset ids in gallery order (the Dataset reports an index)
    apply_only: gr.Checkbox
    only_family: gr.Checkbox
    active: gr.State  # the active preset id, or None
    chip: gr.Markdown
    clear: gr.Button
    api_preset_id: gr.Textbox  # hidden: the preset-id input of the /generate_preset endpoint

    @property
    def chip_outputs(self) -> list:
        return [self.active, self.chip, self.clear]


@dataclass
class PresetManager:
    pick: gr.Dropdown
    load: gr.Button
    delete: gr.Button
    preset_id: gr.Textbox
    name_zh: gr.Textbox
    name_en: gr.Textbox
    description_zh: gr.Textbox
    description_en: gr.Textbox
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    save: gr.Button
    errors_title: gr.Markdown
    errors: gr.Dataframe
    reload: gr.Button

    @property
    def form(self) -> list:
        return [self.preset_id, self.name_zh, self.name_en, self.description_zh, self.description_en,
                self.prompt, self.negative_prompt]


# -- plain helpers ---------------------------------------------------------------------------------

def ordered_presets(presets: list[Preset], family: Family | str, only_family: bool = False) -> list[Preset]:
    """Presets for ``family`` first (those that list it earliest first), then the others."""
    family = Family(family)
    rank = {p.id: (p.families.index(family) if family in p.families else len(Family)) for p in presets}
    ordered = sorted(presets, key=lambda p: rank[p.id])
    if only_family:
        ordered = [p for p in ordered if family in p.families]
    return ordered


def preset_values(preset: Preset, family: Family | str) -> dict:
    """The txt2img field values (:data:`PRESET_FIELDS`) for ``preset`` on ``family``."""
    params = preset.params_for(family)
    clip_skip = (params.clip_skip or 1) if family_info(family).supports_clip_skip else 1
    return {"sampler": params.sampler, "steps": params.steps, "cfg_scale": params.cfg_scale,
            "width": params.width, "height": params.height, "seed": preset.seed, "clip_skip": clip_skip}


def _thumbnail_uri(path: Path | None) -> str | None:
    """A small JPEG data URI of ``path`` (no file serving needed), or None when it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail(THUMB_SIZE)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def card_html(t: Translator, preset: Preset, family: Family | str, thumbnail: str | None = None) -> str:
    """One gallery card: thumbnail (if any), the name in the page language, and a note when the
    preset is not made for the current family."""
    name = escape(preset.name.get(t.lang))
    description = escape(preset.description.get(t.lang), quote=True)
    parts = [f'<div class="visage-preset" title="{description}" '
             'style="display:flex;align-items:center;gap:8px;min-height:2.2em">']
    if thumbnail:
        parts.append(f'<img src="{thumbnail}" alt="" '
                     'style="width:48px;height:64px;object-fit:cover;border-radius:4px;margin:0">')
    parts.append(f"<div><strong>{name}</strong>")
    if Family(family) not in preset.families:
        families = ", ".join(family_label(f, t) for f in preset.families)
        parts.append(f"<br><small>{escape(t('presets.other_family', families=families))}</small>")
    parts.append("</div></div>")
    return "".join(parts)


def gallery_samples(engine, t: Translator, only_family: bool = False) -> tuple[list[list[str]], list[str]]:
    """(Dataset samples, preset ids in the same order) for the current model family."""
    family = engine.family_of(None)
    samples, ids = [], []
    for preset in ordered_presets(engine.presets(), family, only_family):
        try:
            thumb = _thumbnail_uri(engine.preset_thumbnail(preset.id)) if preset.thumbnail else None
        except VisageError:
            thumb = None
        samples.append([card_html(t, preset, family, thumb)])
        ids.append(preset.id)
    return samples, ids


def pick_choices(engine, t: Translator) -> list[tuple[str, str]]:
    """Choices of the manage dropdown: ``name · id`` (🔒 marks built-in presets)."""
    choices = []
    for preset in engine.presets():
        label = f"{preset.name.get(t.lang)} · {preset.id}"
        if not engine.is_user_preset(preset.id):
            label += " 🔒"
        choices.append((label, preset.id))
    return choices


def error_rows(engine) -> list[list[str]]:
    """``[file, field, problem]`` for every preset file that could not be loaded."""
    return [[e.file, e.field, e.problem] for e in engine.preset_errors()]


def errors_title(t: Translator, rows: list) -> str:
    return t("presets.errors", count=len(rows)) if rows else ""


def chip_updates(t: Translator, preset: Preset | None) -> tuple:
    """(active state, chip, clear button) for ``preset`` (None: no preset is active)."""
    if preset is None:
        return None, gr.Markdown("", visible=False), gr.Button(visible=False)
    return (preset.id, gr.Markdown(t("presets.active", name=preset.name.get(t.lang)), visible=True),
            gr.Button(visible=True))


def refresh_updates(engine, t: Translator, only_family: bool = False, pick=None) -> tuple:
    """(gallery, ids, pick dropdown, errors title, errors table) after the preset list changed."""
    samples, ids = gallery_samples(engine, t, bool(only_family))
    rows = error_rows(engine)
    return (gr.Dataset(samples=samples), ids,
            gr.Dropdown(choices=pick_choices(engine, t), value=pick),
            gr.Markdown(errors_title(t, rows), visible=bool(rows)),
            gr.Dataframe(value=rows, visible=bool(rows)))


# -- handlers ---------------------------------------------------------------------------------------

def make_select(engine, t: Translator, generate: Callable, extra_names: tuple[str, ...] = ()):
    """Handler for a click on a gallery card: fill the fields with the preset's values for the
    current family, make it the active preset and, unless "apply only" is ticked, generate at once
    with the user's prompt (unchanged) and ``preset=ID``.

    ``generate`` is the txt2img generate handler. Yields ``(active, chip, clear, *PRESET_FIELDS,
    *generate outputs)``. After the LoRA rows' ``MAX_PICKED`` weights come the values of ``extra_names``
    (txt2img's backend / decoder / preview interval / post-processors), passed to ``generate`` by name.
    """
    skip_head = (gr.skip(),) * (3 + len(PRESET_FIELDS))
    skip_run = (gr.skip(),) * RUN_OUTPUTS

    def select_preset(index, ids, apply_only, prompt, negative_prompt, batch_size, batch_count, styles=None,
                      lora_names=None, *rest):
        lora_weights = rest[:lora_panel.MAX_PICKED]
        extras = dict(zip(extra_names, rest[lora_panel.MAX_PICKED:]))
        ids = ids or []
        if not isinstance(index, int) or not 0 <= index < len(ids):
            yield (*skip_head, *skip_run)
            return
        try:
            preset = engine.preset(ids[index])
            family = engine.family_of(None)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        values = preset_values(preset, family)
        yield (*chip_updates(t, preset), *(values[k] for k in PRESET_FIELDS), *skip_run)
        if apply_only:
            ui_info(t, t("presets.applied", name=preset.name.get(t.lang)))
            return
        for out in generate(prompt, negative_prompt, values["sampler"], values["steps"], values["cfg_scale"],
                            values["width"], values["height"], values["seed"], batch_size, batch_count,
                            values["clip_skip"], styles, preset.id,
                            lora_panel.picked_loras(lora_names, lora_weights), **extras):
            yield (*skip_head, *out)

    return select_preset


def make_clear(t: Translator):
    """Handler: no preset is active any more (prompts are used as typed)."""

    def clear_preset():
        ui_info(t, t("presets.cleared"))
        return chip_updates(t, None)

    return clear_preset


def make_generate_preset(engine, t: Translator, generate: Callable):
    """API handler (``/generate_preset``): preset id + the user's prompt -> images and infotext.

    The preset's parameters for the current family and its seed policy are used; batch of one.
    """

    def generate_preset(preset_id, prompt, negative_prompt="", styles=None):
        try:
            if not preset_id:
                raise InvalidRequest("preset", Message("rule.required"))
            preset = engine.preset(str(preset_id).strip())
            values = preset_values(preset, engine.family_of(None))
        except VisageError as exc:
            raise ui_error(t, exc) from None
        yield from generate(prompt, negative_prompt, values["sampler"], values["steps"], values["cfg_scale"],
                            values["width"], values["height"], values["seed"], 1, 1, values["clip_skip"],
                            styles, preset.id)

    return generate_preset


def make_reapply(engine, t: Translator):
    """After a model switch: the active preset's values for the new family (or no change)."""

    def reapply(active):
        if not active:
            return tuple(gr.skip() for _ in PRESET_FIELDS)
        try:
            preset = engine.preset(active)
        except VisageError:
            return tuple(gr.skip() for _ in PRESET_FIELDS)
        values = preset_values(preset, engine.family_of(None))
        return tuple(values[k] for k in PRESET_FIELDS)

    return reapply


def make_load(engine, t: Translator):
    """Handler: preset id -> the manage form and the txt2img fields filled from that preset."""

    def load(preset_id):
        if not preset_id:
            raise gr.Error(t("presets.pick_first"), title=t("error.title"), print_exception=False)
        try:
            preset = engine.preset(preset_id)
            values = preset_values(preset, engine.family_of(None))
        except VisageError as exc:
            raise ui_error(t, exc) from None
        form = (preset.id, preset.name.zh, preset.name.en, preset.description.zh, preset.description.en,
                preset.prompt, preset.negative_prompt)
        return (*form, *(values[k] for k in PRESET_FIELDS))

    return load


def preset_from_form(engine, t: Translator, preset_id, name_zh, name_en, description_zh, description_en,
                     prompt, negative_prompt, sampler, steps, cfg_scale, width, height, seed,
                     clip_skip) -> Preset:
    """A validated Preset from the manage form and the current txt2img values.

    The values are stored for the current family; when a preset with this id exists, its other
    families, LoRAs, thumbnail and tags are kept.
    """
    preset_id = (preset_id or "").strip()
    if not preset_id:
        raise gr.Error(t("presets.id_required"), title=t("error.title"), print_exception=False)
    if not ID_RE.match(preset_id):
        raise gr.Error(t("presets.bad_id", id=preset_id), title=t("error.title"), print_exception=False)
    name_zh, name_en = (name_zh or "").strip(), (name_en or "").strip()
    if not name_zh and not name_en:
        raise gr.Error(t("presets.name_required"), title=t("error.title"), print_exception=False)
    family = Family(engine.family_of(None))
    params = {"steps": steps, "cfg_scale": cfg_scale, "width": width, "height": height, "sampler": sampler}
    for key in ("steps", "width", "height"):
        if isinstance(params[key], float) and params[key].is_integer():
            params[key] = int(params[key])
    if family_info(family).supports_clip_skip and clip_skip not in (None, "", 1):
        params["clip_skip"] = int(clip_skip)
    try:
        existing = engine.preset(preset_id)
    except InvalidRequest:
        existing = None
    data = existing.to_dict() if existing else {}
    seed_value = -1 if seed in (None, "") else int(seed)
    data.update({
        "id": preset_id,
        "name": {"zh": name_zh or name_en, "en": name_en or name_zh},
        "description": {"zh": (description_zh or "").strip(), "en": (description_en or "").strip()},
        "prompt": prompt if prompt is not None else "{prompt}",
        "negative_prompt": negative_prompt or "",
        "seed": RANDOM_SEED if seed_value < 0 else seed_value,
    })
    families = list(data.get("families", []))
    if family.value not in families:
        families.append(family.value)
    data["families"] = families
    data["family_params"] = {**data.get("family_params", {}), family.value: params}
    return parse_preset(data, preset_id, f"{preset_id}.json")


def make_save(engine, t: Translator):
    """Handler: save the form + current settings as a user preset; returns the refreshed lists."""

    def save(preset_id, name_zh, name_en, description_zh, description_en, prompt, negative_prompt,
             sampler, steps, cfg_scale, width, height, seed, clip_skip, only_family=False):
        try:
            preset = preset_from_form(engine, t, preset_id, name_zh, name_en, description_zh, description_en,
                                      prompt, negative_prompt, sampler, steps, cfg_scale, width, height,
                                      seed, clip_skip)
            engine.save_preset(preset)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        ui_info(t, t("presets.saved", id=preset.id))
        return refresh_updates(engine, t, only_family, pick=preset.id)

    return save


def make_delete(engine, t: Translator):
    """Handler: delete a user preset (built-in ones are refused with a translated message)."""

    def delete(preset_id, only_family=False, active=None):
        if not preset_id:
            raise gr.Error(t("presets.pick_first"), title=t("error.title"), print_exception=False)
        try:
            preset = engine.preset(preset_id)
            if not engine.is_user_preset(preset_id):
                raise gr.Error(t("presets.builtin_refused", name=preset.name.get(t.lang)),
                               title=t("error.title"), print_exception=False)
            engine.delete_preset(preset_id)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        ui_info(t, t("presets.deleted", id=preset_id))
        if active == preset_id and preset_id not in {p.id for p in engine.presets()}:
            chip = chip_updates(t, None)
        else:
            chip = (gr.skip(),) * 3
        return (*refresh_updates(engine, t, only_family), *chip)

    return delete


def make_reload(engine, t: Translator):
    """Handler: read the preset folders again."""

    def reload(only_family=False):
        engine.reload_presets()
        ui_info(t, t("presets.reloaded", count=len(engine.presets())))
        return refresh_updates(engine, t, only_family)

    return reload


# -- layout and wiring ----------------------------------------------------------------------------

def build_gallery(engine, t: Translator) -> PresetGallery:
    """The preset gallery with its options and the active-preset chip (lay out only)."""
    samples, ids = gallery_samples(engine, t)
    with gr.Accordion(t("presets.title"), open=True, elem_id="txt2img_presets"):
        gallery = gr.Dataset(components=["html"], samples=samples, type="index", layout="gallery",
                             samples_per_page=48, label=t("presets.gallery"), headers=[],
                             elem_id="txt2img_preset_gallery")
        with gr.Row(equal_height=True):
            apply_only = gr.Checkbox(False, label=t("presets.apply_only"), scale=2)
            only_family = gr.Checkbox(False, label=t("presets.only_family"), scale=2)
            chip = gr.Markdown("", visible=False, elem_id="txt2img_active_preset")
            clear = gr.Button(t("presets.clear"), visible=False, size="sm", scale=0, min_width=100)
    api_preset_id = gr.Textbox("", visible=False, label=t("presets.api_id"))
    return PresetGallery(gallery, gr.State(ids), apply_only, only_family, gr.State(None), chip, clear,
                         api_preset_id)


def build_manager(engine, t: Translator) -> PresetManager:
    """The "manage presets" accordion (lay out only)."""
    rows = error_rows(engine)
    with gr.Accordion(t("presets.manage"), open=False, elem_id="txt2img_manage_presets"):
        with gr.Row(equal_height=True):
            pick = gr.Dropdown(choices=pick_choices(engine, t), value=None, label=t("presets.pick"), scale=4)
            load = gr.Button(t("presets.load"), scale=1, min_width=80)
            delete = gr.Button(t("presets.delete"), variant="stop", scale=1, min_width=80)
        with gr.Row():
            preset_id = gr.Textbox("", label=t("presets.id"), info=t("presets.id_info"), max_lines=1)
            name_zh = gr.Textbox("", label=t("presets.name_zh"), max_lines=1)
            name_en = gr.Textbox("", label=t("presets.name_en"), max_lines=1)
        with gr.Row():
            description_zh = gr.Textbox("", label=t("presets.description_zh"), lines=2)
            description_en = gr.Textbox("", label=t("presets.description_en"), lines=2)
        prompt = gr.Textbox("{prompt}", label=t("presets.prompt"), info=t("presets.prompt_info"), lines=2)
        negative = gr.Textbox("", label=t("presets.negative"), lines=2)
        save = gr.Button(t("presets.save"), variant="primary")
        gr.Markdown(t("presets.save_note"))
        title = gr.Markdown(errors_title(t, rows), visible=bool(rows))
        errors = gr.Dataframe(value=rows, headers=[t("presets.col_file"), t("presets.col_field"),
                                                   t("presets.col_problem")],
                              visible=bool(rows), interactive=False, wrap=True)
        reload = gr.Button(t("presets.reload"), size="sm")
    return PresetManager(pick, load, delete, preset_id, name_zh, name_en, description_zh, description_en,
                         prompt, negative, save, title, errors, reload)


def wire(engine, t: Translator, tab, generate: Callable) -> None:
    """Connect the gallery and the manager of ``tab`` (a Txt2ImgTab) to its fields.

    ``generate`` is the txt2img generate handler (for one-click and ``/generate_preset``).
    """
    g, m = tab.presets, tab.manager
    fields = [getattr(tab, name) for name in PRESET_FIELDS]
    run_outputs = [tab.gallery, tab.infotext, tab.progress, tab.infotexts, tab.seeds]
    # what the Generate button also sends: backend, decoder, preview interval, ticked post-processors
    extras = {name: getattr(tab, name, None) for name in ("backend", "decoder", "preview_every", "postprocess")}
    extras = {name: control for name, control in extras.items() if control is not None}
    g.gallery.click(make_select(engine, t, generate, tuple(extras)),
                    [g.gallery, g.ids, g.apply_only, tab.prompt, tab.negative_prompt, tab.batch_size,
                     tab.batch_count, tab.styles, tab.loras.picked, *tab.loras.weights, *extras.values()],
                    [*g.chip_outputs, *fields, *run_outputs],
                    api_visibility="private", show_progress="minimal", concurrency_limit=None)
    g.clear.click(make_clear(t), None, g.chip_outputs, api_visibility="private", queue=False)
    refresh_outputs = [g.gallery, g.ids, m.pick, m.errors_title, m.errors]
    g.only_family.change(lambda only: refresh_updates(engine, t, only)[:2], g.only_family, [g.gallery, g.ids],
                         api_visibility="private", show_progress="hidden")
    gr.on(triggers=[], fn=make_generate_preset(engine, t, generate),
          inputs=[g.api_preset_id, tab.prompt, tab.negative_prompt, tab.styles], outputs=run_outputs,
          api_name="generate_preset", concurrency_limit=None)

    m.load.click(make_load(engine, t), m.pick, [*m.form, *fields], api_visibility="private")
    m.save.click(make_save(engine, t), [*m.form, *fields, g.only_family], refresh_outputs,
                 api_visibility="private")
    m.delete.click(make_delete(engine, t), [m.pick, g.only_family, g.active],
                   [*refresh_outputs, *g.chip_outputs], api_visibility="private")
    m.reload.click(make_reload(engine, t), g.only_family, refresh_outputs, api_visibility="private")


def wire_family_change(engine, t: Translator, tab, event) -> None:
    """After ``event`` (a model switch or refresh): re-sort the gallery and re-apply the active
    preset's values for the new family."""
    g = tab.presets
    fields = [getattr(tab, name) for name in PRESET_FIELDS]
    event.then(lambda only: refresh_updates(engine, t, only)[:2], g.only_family, [g.gallery, g.ids],
               api_visibility="private", show_progress="hidden") \
        .then(make_reapply(engine, t), g.active, fields, api_visibility="private", show_progress="hidden")
