"""The page side of presets, A1111 styles and the System tab, driven with the fake engine of test_ui."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from modules.ui import build_blocks, presets_panel, system_tab  # noqa: E402
from modules.ui.i18n import EN, ZH, Translator  # noqa: E402
from modules.ui.presets_panel import PRESET_FIELDS  # noqa: E402
from modules.ui.txt2img import PARAM_FIELDS  # noqa: E402
from test_ui import FakeEngine, _free_port, endpoint, txt2img_args  # noqa: E402

#: the shipped preset the tests click (presets/realistic_portrait.json)
REALISTIC = "realistic_portrait"
SD15_REALISTIC = {"sampler": "DPM++ 2M Karras", "steps": 28, "cfg_scale": 6.5, "width": 512, "height": 768,
                  "seed": -1, "clip_skip": 1}


@pytest.fixture
def engine(tmp_path):
    e = FakeEngine(tmp_path)
    yield e
    e.close()


def handler(demo: gr.Blocks, name: str):
    """The page's BlockFunction whose Python function is called ``name`` (the private ones)."""
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", None) == name)


def gallery_ids(engine, lang="en") -> list[str]:
    return presets_panel.gallery_samples(engine, Translator(lang))[1]


def select_args(engine, preset_id, *, apply_only=False, prompt="a face", negative="", styles=None):
    ids = gallery_ids(engine)
    return [ids.index(preset_id), ids, apply_only, prompt, negative, 1, 1, styles or []]


def form_args(preset_id, zh="我的人像", en="My portrait", template="{prompt}, soft light", negative="blurry",
              **fields):
    values = dict(sampler="Euler a", steps=12, cfg_scale=5.0, width=512, height=640, seed=-1, clip_skip=2)
    values.update(fields)
    return [preset_id, zh, en, "", "", template, negative, *(values[k] for k in PRESET_FIELDS)]


# -- one-click presets ------------------------------------------------------------------------------

def test_preset_click_fills_fields_and_generates_with_the_users_prompt(engine):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    fn = handler(demo, "select_preset")
    # the handler's outputs are wired to the chip, the seven fields and the generation outputs
    labels = [getattr(c, "label", None) for c in fn.outputs[3:3 + len(PRESET_FIELDS)]]
    assert labels == [EN["txt2img.sampler"], EN["txt2img.steps"], EN["txt2img.cfg"], EN["txt2img.width"],
                      EN["txt2img.height"], EN["txt2img.seed"], EN["txt2img.clip_skip"]]
    assert isinstance(fn.inputs[0], gr.Dataset)

    outs = list(fn.fn(*select_args(engine, REALISTIC, prompt="a woman by the window", negative="hat")))
    first = outs[0]
    assert first[0] == REALISTIC
    assert first[1].value == "**Preset:** Realistic portrait" and first[1].visible is True
    assert first[2].visible is True
    assert dict(zip(PRESET_FIELDS, first[3:10])) == SD15_REALISTIC
    gallery, infotext, status, _texts, _seeds = outs[-1][10:]
    assert len(gallery) == 1 and gallery[0].size == (512, 768)
    assert status.startswith("Done: 1 image(s)")

    sent = engine.submitted[-1]
    assert sent.prompt == "a woman by the window" and sent.negative_prompt == "hat"  # not expanded by the page
    assert sent.preset == REALISTIC
    assert (sent.steps, sent.cfg_scale, sent.width, sent.height, sent.sampler, sent.seed) == \
        (28, 6.5, 512, 768, "DPM++ 2M Karras", -1)
    ran = engine.requests[-1]  # the engine put the prompt into the preset's template
    assert ran.prompt.startswith("a woman by the window, photorealistic portrait photograph")
    assert ran.negative_prompt.startswith("hat, lowres")
    assert infotext.startswith("a woman by the window, photorealistic")


def test_apply_only_fills_fields_without_generating(engine, capsys):
    demo = build_blocks(engine, Translator("zh", strict=True))
    fn = handler(demo, "select_preset").fn
    outs = list(fn(*select_args(engine, REALISTIC, apply_only=True)))
    assert "已应用预设 写实人像" in capsys.readouterr().out  # gr.Info outside a request prints
    assert len(outs) == 1
    assert outs[0][0] == REALISTIC and outs[0][1].value == "**预设：** 写实人像"
    assert dict(zip(PRESET_FIELDS, outs[0][3:10])) == SD15_REALISTIC
    assert all(o == gr.skip() for o in outs[0][10:])
    assert engine.submitted == []


def test_bad_click_index_changes_nothing(engine):
    fn = presets_panel.make_select(engine, Translator("en"), lambda *a: iter(()))
    outs = list(fn(99, gallery_ids(engine), False, "p", "", 1, 1, []))
    assert len(outs) == 1 and all(o == gr.skip() for o in outs[0])


def test_generate_sends_active_preset_and_clearing_returns_to_plain_prompts(engine, capsys):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    generate = endpoint(demo, "generate")
    list(generate(*txt2img_args(prompt="a face"), [], REALISTIC))
    assert engine.submitted[-1].preset == REALISTIC and engine.submitted[-1].prompt == "a face"
    assert engine.requests[-1].prompt.startswith("a face, photorealistic")
    active, chip, clear = handler(demo, "clear_preset").fn()
    assert "Preset cleared" in capsys.readouterr().out
    assert active is None and chip.visible is False and clear.visible is False
    list(generate(*txt2img_args(prompt="a face"), [], active))
    assert engine.submitted[-1].preset is None and engine.requests[-1].prompt == "a face"
    # older callers that send only the eleven fields still work
    list(generate(*txt2img_args(prompt="plain")))
    assert engine.submitted[-1].preset is None and engine.submitted[-1].styles == []


def test_generate_preset_endpoint_uses_the_current_family(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    run = endpoint(demo, "generate_preset")
    engine.current = engine.entries[1]  # Z-Image
    final = list(run("realistic_portrait", "a woman"))[-1]
    assert final[0][0].size == (864, 1152)
    sent = engine.submitted[-1]
    assert (sent.preset, sent.prompt, sent.steps, sent.cfg_scale, sent.sampler, sent.batch_size) == \
        (REALISTIC, "a woman", 8, 0.0, "Euler (flow match)", 1)
    with pytest.raises(gr.Error) as info:
        next(run("nope", "x"))
    assert info.value.message == "Preset: no preset named 'nope'"  # the English of rule.no_preset (modules.messages)
    zh_run = endpoint(build_blocks(engine, Translator("zh", strict=True)), "generate_preset")
    with pytest.raises(gr.Error) as info:
        next(zh_run("", "x"))
    assert info.value.message == "参数“预设”无效：不能为空"


def test_gallery_puts_presets_for_the_current_family_first(engine, tmp_path):
    user = tmp_path / "presets"
    user.mkdir(exist_ok=True)
    (user / "xl_only.json").write_text(json.dumps({
        "name": {"zh": "仅XL", "en": "XL only"}, "families": ["sdxl"],
        "family_params": {"sdxl": {"steps": 20, "cfg_scale": 5, "width": 832, "height": 1216,
                                   "sampler": "Euler"}}}), encoding="utf-8")
    Image.new("RGB", (300, 400), (200, 10, 10)).save(user / "thumb.png")
    data = json.loads((Path(__file__).resolve().parents[1] / "presets" / "anime.json").read_text("utf-8"))
    data["thumbnail"] = "thumb.png"
    (user / "anime.json").write_text(json.dumps(data), encoding="utf-8")  # a user override with a thumbnail
    engine.reload_presets()
    t = Translator("zh")
    samples, ids = presets_panel.gallery_samples(engine, t)
    assert ids[-1] == "xl_only"  # not made for SD1.5: last, with a note
    assert "适用于 Stable Diffusion XL" in samples[-1][0] and "<strong>仅XL</strong>" in samples[-1][0]
    assert "data:image/jpeg;base64," in samples[ids.index("anime")][0]
    assert ids.index("anime") < ids.index(REALISTIC)  # anime lists sd15 second, realistic third
    only = presets_panel.gallery_samples(engine, t, only_family=True)[1]
    assert "xl_only" not in only and len(only) == len(ids) - 1
    engine.current = engine.entries[1]  # Z-Image: traditional_chinese lists it first
    assert presets_panel.gallery_samples(engine, t)[1][0] == "traditional_chinese"
    # after a model switch the active preset's values follow the new family
    reapply = presets_panel.make_reapply(engine, t)
    assert dict(zip(PRESET_FIELDS, reapply(REALISTIC)))["steps"] == 8
    assert all(v == gr.skip() for v in reapply(None))


def test_page_escapes_preset_names(engine, tmp_path):
    user = tmp_path / "presets"
    user.mkdir(exist_ok=True)
    (user / "evil.json").write_text(json.dumps({
        "name": {"zh": "<img src=x onerror=alert(1)>", "en": "<b>x</b>"}, "families": ["sd15"],
        "family_params": {"sd15": {"steps": 20, "cfg_scale": 5, "width": 512, "height": 512,
                                   "sampler": "Euler"}}}), encoding="utf-8")
    engine.reload_presets()
    samples, ids = presets_panel.gallery_samples(engine, Translator("zh"))
    card = samples[ids.index("evil")][0]
    assert "<img src=x" not in card and "&lt;img src=x" in card


# -- managing presets -------------------------------------------------------------------------------

def test_save_edit_delete_round_trip(engine, tmp_path, capsys):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    save, load, delete = (handler(demo, name).fn for name in ("save", "load", "delete"))
    gallery, ids, pick, title, errors = save(*form_args("mine"), False)
    assert "Saved preset mine" in capsys.readouterr().out
    path = tmp_path / "presets" / "mine.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["name"] == {"zh": "我的人像", "en": "My portrait"}
    assert data["families"] == ["sd15"] and data["seed"] == "random"
    assert data["family_params"]["sd15"] == {"steps": 12, "cfg_scale": 5.0, "width": 512, "height": 640,
                                             "sampler": "Euler a", "clip_skip": 2}
    assert data["prompt"] == "{prompt}, soft light" and data["negative_prompt"] == "blurry"
    assert "mine" in ids and pick.value == "mine"
    assert any(value == "mine" for _label, value in pick.choices)

    # edit: load into the form (and the fields), change, save over it
    loaded = load("mine")
    assert list(loaded[:7]) == ["mine", "我的人像", "My portrait", "", "", "{prompt}, soft light", "blurry"]
    assert dict(zip(PRESET_FIELDS, loaded[7:]))["steps"] == 12
    engine.current = engine.entries[1]  # saving on Z-Image adds that family, keeps sd15
    save(*form_args("mine", en="Mine v2", sampler="Euler (flow match)", steps=8, cfg_scale=0.0,
                    width=1024, height=1024, seed=77, clip_skip=1), False)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["name"]["en"] == "Mine v2" and data["families"] == ["sd15", "zimage"]
    assert data["family_params"]["sd15"]["steps"] == 12 and data["family_params"]["zimage"]["steps"] == 8
    assert "clip_skip" not in data["family_params"]["zimage"] and data["seed"] == 77
    assert engine.preset("mine").name.en == "Mine v2"

    # a one-click generation with it uses the user's prompt and the saved values
    list(handler(demo, "select_preset").fn(*select_args(engine, "mine", prompt="me")))
    assert engine.submitted[-1].preset == "mine" and engine.submitted[-1].seed == 77
    assert engine.requests[-1].prompt == "me, soft light"

    # delete: the active preset is cleared too
    out = delete("mine", False, "mine")
    assert "Deleted preset mine" in capsys.readouterr().out
    assert not path.exists() and "mine" not in out[1]
    assert out[5] is None and out[6].visible is False


@pytest.mark.parametrize("lang, expected", [
    ("en", "Realistic portrait is a built-in preset and cannot be deleted; "
           "save it under a new id to make your own version"),
    ("zh", "“写实人像”是内置预设，不能删除；可以用新的 ID 另存为自己的版本"),
])
def test_deleting_a_built_in_preset_is_refused(engine, lang, expected):
    demo = build_blocks(engine, Translator(lang, strict=True))
    with pytest.raises(gr.Error) as info:
        handler(demo, "delete").fn(REALISTIC, False, None)
    assert info.value.message == expected
    assert REALISTIC in {p.id for p in engine.presets()}


@pytest.mark.parametrize("args, message", [
    (form_args(""), EN["presets.id_required"]),
    (form_args("Bad Id!"), EN["presets.bad_id"].format(id="Bad Id!")),
    (form_args("ok", zh="", en=""), EN["presets.name_required"]),
    (form_args("ok", steps=2.5), "steps: must be a whole number, got the number 2.5"),
])
def test_save_explains_what_is_wrong(engine, args, message):
    save = presets_panel.make_save(engine, Translator("en", strict=True))
    with pytest.raises(gr.Error) as info:
        save(*args)
    assert message in info.value.message
    assert "ok" not in {p.id for p in engine.presets()}


def test_one_name_is_enough_and_load_needs_a_choice(engine):
    t = Translator("en", strict=True)
    presets_panel.make_save(engine, t)(*form_args("solo", zh="", en="Solo"))
    assert engine.preset("solo").name.zh == "Solo"
    with pytest.raises(gr.Error, match="Choose a preset first"):
        presets_panel.make_load(engine, t)(None)


def test_bad_preset_files_are_listed_and_do_not_break_the_page(engine, tmp_path, capsys):
    user = tmp_path / "presets"
    user.mkdir(exist_ok=True)
    (user / "broken.json").write_text('{"name": {"zh": "坏", "en": "bad"}, "families": ["sd15"], '
                                      '"family_params": {"sd15": {"steps": 999, "cfg_scale": 5, "width": 512, '
                                      '"height": 512, "sampler": "Euler"}}}', encoding="utf-8")
    (user / "notjson.json").write_text("{nope", encoding="utf-8")
    engine.reload_presets()
    t = Translator("zh", strict=True)
    demo = build_blocks(engine, t)
    table = next(b for b in demo.blocks.values() if isinstance(b, gr.Dataframe) and ZH["presets.col_file"]
                 in b.headers)
    rows = table.value["data"]
    assert table.visible is True
    assert ["broken.json", "family_params.sd15.steps", "must be between 1 and 150, got 999"] in rows
    assert any(r[0] == "notjson.json" and r[1] == "(file)" and "invalid JSON" in r[2] for r in rows)
    titles = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert "⚠️ 有 2 个预设文件无法读取：" in titles
    assert "broken" not in gallery_ids(engine) and REALISTIC in gallery_ids(engine)
    # fixing the file and reloading clears the list
    (user / "broken.json").unlink()
    (user / "notjson.json").unlink()
    out = handler(demo, "reload").fn(False)
    assert "已读取 14 个预设" in capsys.readouterr().out
    assert out[3].visible is False and out[4].visible is False


# -- styles ---------------------------------------------------------------------------------------------

def test_styles_are_listed_and_passed_through(engine):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == EN["styles.label"])
    assert [c[1] for c in dropdown.choices] == ["Film", "Sharp"] and dropdown.multiselect
    list(endpoint(demo, "generate")(*txt2img_args(prompt="a face", negative_prompt="hat"), ["Film", "Sharp"]))
    assert engine.submitted[-1].styles == ["Film", "Sharp"] and engine.submitted[-1].prompt == "a face"
    assert engine.requests[-1].prompt == "a face, film grain, sharp focus"
    assert engine.requests[-1].negative_prompt == "hat, digital, blurry"
    # with a preset too: the preset template first, then the styles
    list(handler(demo, "select_preset").fn(*select_args(engine, REALISTIC, styles=["Sharp"])))
    assert engine.submitted[-1].styles == ["Sharp"]
    assert engine.requests[-1].prompt.endswith("high detail, sharp focus")
    # refresh picks up a changed styles.csv and drops selections that are gone
    engine.styles_file.write_text("name,prompt,negative_prompt\nNew,new look,\nSharp,sharp,\n", encoding="utf-8")
    update = handler(demo, "refresh_styles").fn(["Film", "Sharp"])
    assert update.choices == [("New", "New"), ("Sharp", "Sharp")] and update.value == ["Sharp"]
    with pytest.raises(gr.Error) as info:
        next(endpoint(demo, "generate")(*txt2img_args(), ["Gone"]))
    assert info.value.message == "Styles: unknown style(s): Gone"


def test_broken_styles_file_gives_a_warning_not_a_crash(engine):
    # an over-long field is what makes Python's csv raise
    engine.styles_file.write_text("name,prompt\nA," + "x" * (csv.field_size_limit() + 1) + "\n", encoding="utf-8")
    demo = build_blocks(engine, Translator("en", strict=True))  # builds with no styles
    with pytest.warns(UserWarning, match="styles.csv: line"):
        update = handler(demo, "refresh_styles").fn(["A"])
    assert update.choices == [] and update.value == []


# -- System tab ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "zh"])
def test_system_tab_shows_device_models_and_cache_stats(engine, lang):
    t = Translator(lang, strict=True)
    demo = build_blocks(engine, t)
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert (EN if lang == "en" else ZH)["tab.system"] in labels
    engine_md, cache_md = system_tab.make_refresh(engine, t)()
    if lang == "en":
        assert "**Device:** cpu · fp32" in engine_md and "tiny-sd15" in engine_md
        assert "**Hits / misses:** 3 / 1 (hit rate 75%)" in cache_md
        assert "4 · 3.0 / 256.0 MiB" in cache_md and "1.2 s" in cache_md
        assert "2 entries · 1.0 MiB · 1 hits from disk" in cache_md
    else:
        assert "**设备：** cpu · fp32" in engine_md
        assert "命中率 75%" in cache_md and "节省时间：** 1.2 秒" in cache_md
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert cache_md in shown  # the tab opens with the same text
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer) and b.value == system_tab.REFRESH_S]
    assert len(timers) == 1 and timers[0].active is False  # on only while the tab is open
    info = endpoint(demo, "system")()
    assert info["device"] == "cpu" and info["queue_length"] == 0
    assert info["embedding_cache"]["hit_rate"] == 0.75 and info["embedding_cache"]["disk_entries"] == 2
    assert json.loads(json.dumps(info)) == info


def test_system_tab_timer_follows_the_selected_tab(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    timer = next(b for b in demo.blocks.values() if isinstance(b, gr.Timer) and b.value == system_tab.REFRESH_S)
    toggles = [f for f in demo.fns.values() if f.outputs == [timer]]
    results = sorted(f.fn().active for f in toggles)
    assert results == [False] * 5 + [True]  # txt2img, img2img, inpaint, PNG Info, Models off; System on


# -- over HTTP ----------------------------------------------------------------------------------------

def test_api_generate_generate_preset_and_system_over_gradio_client(engine, tmp_path):
    from gradio_client import Client

    demo = build_blocks(engine, Translator("en", strict=True))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path),
                        analytics_enabled=False)
        # the eleven positional fields of older callers
        _gallery, infotext, status = client.predict("a face", "", "Euler", 3, 7.0, 64, 64, 5, 1, 1, 1,
                                                    api_name="/generate")
        assert "Seed: 5" in infotext and status.startswith("Done: 1 image(s)")
        assert engine.submitted[-1].styles == [] and engine.submitted[-1].preset is None
        client.predict("a face", "", "Euler", 3, 7.0, 64, 64, 5, 1, 1, 1, ["Sharp"], api_name="/generate")
        assert engine.submitted[-1].styles == ["Sharp"]
        gallery, infotext, _ = client.predict(preset_id="realistic_portrait", prompt="a woman",
                                              api_name="/generate_preset")
        assert len(gallery) == 1 and infotext.startswith("a woman, photorealistic portrait")
        assert engine.submitted[-1].preset == REALISTIC and engine.submitted[-1].prompt == "a woman"
        info = client.predict(api_name="/system")
        assert info["embedding_cache"]["hits"] == 3 and info["model"].startswith("tiny-sd15")
    finally:
        demo.close()


def test_param_fields_unchanged_for_api_callers():
    assert PARAM_FIELDS == ("prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "width", "height",
                            "seed", "batch_size", "batch_count", "clip_skip")


def test_one_click_preset_uses_the_backend_decoder_and_preview_settings(engine):
    """A preset click sends what the Generate button would: backend, decoder and preview interval."""
    from modules.ui.lora_panel import MAX_PICKED

    demo = build_blocks(engine, Translator("en", strict=True))
    select = handler(demo, "select_preset")
    assert len(select.inputs) == len(select_args(engine, REALISTIC)) + 1 + MAX_PICKED + 3
    args = [*select_args(engine, REALISTIC), [], *([1.0] * MAX_PICKED), "diffusers", "taesd", 3]
    list(select.fn(*args))
    sent = engine.submitted[-1]
    assert (sent.preset, sent.backend, sent.decoder, sent.preview_every) == (REALISTIC, "diffusers", "taesd", 3)
    list(select.fn(*select_args(engine, REALISTIC)))  # without them: the defaults (no settings here: no previews)
    assert (engine.submitted[-1].decoder, engine.submitted[-1].preview_every) == ("vae", 0)
