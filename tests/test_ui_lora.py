"""The page side of LoRAs: the txt2img picker and the Merge tab, driven with the fake engine of test_ui."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from modules.lora import LoraInfo, parse_prompt_loras  # noqa: E402
from modules.lora.formats import LoraFormat  # noqa: E402
from modules.families import Family  # noqa: E402
from modules.messages import Message  # noqa: E402
from modules.ui import build_blocks, lora_panel, merge_tab  # noqa: E402
from modules.ui.i18n import EN, ZH, Translator  # noqa: E402
from modules.ui.lora_panel import DEFAULT_WEIGHT, MAX_PICKED  # noqa: E402
from test_ui import FakeEngine, _free_port, endpoint, run_until, txt2img_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SD15_ORDER = ["Film_Grain", "soft_light", "mystery", "aw_portrait_z", "xl_detail", "old_loha"]
#: a job note is a keyed message (the engine makes it so); the page translates it by its key
UNMATCHED = Message("note.lora_unmatched", count=12, examples="lora_unet_mid_block_attn, lora_te_text_model_x")


@pytest.fixture
def engine(tmp_path):
    e = FakeEngine(tmp_path)
    yield e
    e.close()


def handler(demo: gr.Blocks, name: str):
    """The page's BlockFunction whose Python function is called ``name`` (the first one)."""
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", None) == name)


def handlers(demo: gr.Blocks, name: str) -> list:
    return [f for f in demo.fns.values() if getattr(f.fn, "__name__", None) == name]


def weights(*values) -> list[float]:
    """Every slider's value: ``values`` then the default for the hidden rows."""
    return [*values, *([DEFAULT_WEIGHT] * (MAX_PICKED - len(values)))]


def rows_of(out) -> tuple[list[str], list, list]:
    """(picked names, row updates, slider updates) of a row_updates() result."""
    return out[0], list(out[1:1 + MAX_PICKED]), list(out[1 + MAX_PICKED:])


# -- import hygiene ---------------------------------------------------------------------------------

def test_lora_ui_modules_leave_torch_out():
    code = ("import sys, modules.ui, modules.ui.lora_panel, modules.ui.merge_tab; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules]; "
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


# -- the picker's list ------------------------------------------------------------------------------

def test_cards_put_the_current_familys_loras_first(engine):
    t = Translator("en", strict=True)
    samples, names, summary = lora_panel.listing(engine, t)
    assert names == SD15_ORDER
    assert summary == "6 LoRA(s), 3 usable with the current model"
    cards = dict(zip(names, (s[0] for s in samples)))
    assert "<strong>soft_light</strong>" in cards["soft_light"] and "rank 4" in cards["soft_light"]
    assert "opacity" not in cards["soft_light"] and "⛔" not in cards["soft_light"]
    assert "+ text encoder" in cards["Film_Grain"] and "+ text encoder" not in cards["soft_light"]
    assert "family unknown" in cards["mystery"] and "opacity" not in cards["mystery"]
    assert "⛔ made for Stable Diffusion XL" in cards["xl_detail"] and "opacity:0.5" in cards["xl_detail"]
    assert "⛔ made for Z-Image" in cards["aw_portrait_z"]
    assert "LyCORIS LoHa is not supported" in cards["old_loha"] and "opacity:0.5" in cards["old_loha"]

    engine.current = engine.entries[1]  # Z-Image
    zh = Translator("zh", strict=True)
    samples, names, summary = lora_panel.listing(engine, zh)
    assert names[:2] == ["aw_portrait_z", "mystery"] and names[-1] == "old_loha"
    assert summary == "共 6 个 LoRA，2 个适用于当前模型"
    assert "⛔ 适用于 Stable Diffusion 1.5" in samples[names.index("soft_light")][0]


def test_search_matches_names_and_aliases_and_refresh_rescans(engine):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    search = handler(demo, "search_loras")
    assert search.inputs[0].label == EN["lora.search"]
    dataset, names, summary = search.fn("FILM")
    assert names == ["Film_Grain"] and len(dataset.samples) == 1
    assert search.fn("filmgrain")[1] == ["Film_Grain"]  # the kohya alias
    _dataset, names, summary = search.fn("zzz")
    assert names == [] and summary.endswith("none matches “zzz”")
    engine.lora_infos.append(LoraInfo(name="new_face", path=Path("/loras/new_face.safetensors"),
                                      format=LoraFormat.KOHYA, family=Family.SD15, rank=8, has_text_encoder=True,
                                      has_unet=True, alpha_present=True))
    _dataset, names, _summary = handler(demo, "refresh_loras").fn("")
    assert engine.lora_scans == 1 and names[:3] == ["Film_Grain", "new_face", "soft_light"]
    engine.lora_infos.clear()
    _dataset, names, summary = lora_panel.listing_updates(engine, t)
    assert names == [] and summary.startswith("No LoRA files found")


def test_model_switch_resorts_the_cards(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    listing = handlers(demo, "search_loras")
    picker_outputs = listing[0].outputs
    # the search box, then a model switch, the refresh button and the page load each re-sort the cards
    assert len(listing) == 4 and all(f.outputs == picker_outputs for f in listing)
    after = {f.trigger_after for f in listing[1:]}
    assert len(after) == 3 and "switch_model" in {demo.fns[i].api_name for i in after}
    list(endpoint(demo, "switch_model")("tiny-zimage"))
    assert listing[1].fn("")[1][0] == "aw_portrait_z"


# -- picking, removing, tags ------------------------------------------------------------------------

def test_picked_loras_reach_the_request_with_their_weights(engine):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    pick = handler(demo, "pick_lora")
    assert isinstance(pick.inputs[0], gr.Dataset) and len(pick.inputs) == 3 + MAX_PICKED
    ids = lora_panel.listing(engine, t)[1]

    out = pick.fn(ids.index("soft_light"), ids, [], *weights())
    picked, rows, sliders = rows_of(out)
    assert picked == ["soft_light"]
    assert rows[0].visible is True and all(r.visible is False for r in rows[1:])
    assert (sliders[0].label, sliders[0].value) == ("soft_light", 0.8)
    out = pick.fn(ids.index("Film_Grain"), ids, picked, 0.5, *weights()[1:])
    picked, rows, sliders = rows_of(out)
    assert picked == ["soft_light", "Film_Grain"]
    assert [s.value for s in sliders[:2]] == [0.5, 0.8] and sliders[1].label == "Film_Grain"
    assert rows[1].visible is True and rows[2].visible is False

    # the generate button sends backend, decoder and preview interval, the fields, styles, preset, then the
    # picked names and every slider
    generate = handler(demo, "generate_with_options")
    assert generate.inputs[-MAX_PICKED - 1] is pick.inputs[2]
    assert generate.api_visibility == "private"
    hires_off = (False, "Latent", 2.0, 0, 0.7)  # the Hires fix accordion's five inputs follow the run options
    final = list(generate.fn("auto", "vae", 0, *hires_off, *txt2img_args(prompt="a face"), [], None, picked,
                             *weights(0.5, 1.25)))[-1]
    assert final[2].startswith("Done: 2 image(s)")
    assert engine.submitted[-1].loras == [("soft_light", 0.5), ("Film_Grain", 1.25)]
    assert engine.submitted[-1].prompt == "a face"
    assert engine.applied[-1] == [("soft_light", 0.5, 0.5), ("Film_Grain", 1.25, 1.25)]
    # nothing picked: no LoRAs
    list(generate.fn("auto", "vae", 0, *hires_off, *txt2img_args(), [], None, [], *weights()))
    assert engine.submitted[-1].loras == [] and engine.applied[-1] == []


def test_pick_refuses_unusable_duplicates_and_a_full_list(engine, capsys):
    t = Translator("en", strict=True)
    pick = lora_panel.make_pick(engine, t)
    ids = lora_panel.listing(engine, t)[1]
    with pytest.warns(UserWarning, match="xl_detail cannot be used with the current model: made for Stable "
                                         "Diffusion XL"):
        out = pick(ids.index("xl_detail"), ids, [], *weights())
    assert all(o == gr.skip() for o in out)
    with pytest.warns(UserWarning, match="LyCORIS LoHa is not supported"):
        pick(ids.index("old_loha"), ids, [], *weights())
    out = pick(ids.index("soft_light"), ids, ["soft_light"], *weights())
    assert all(o == gr.skip() for o in out) and "soft_light is already added" in capsys.readouterr().out
    full = [f"x{i}" for i in range(MAX_PICKED)]
    with pytest.warns(UserWarning, match=f"At most {MAX_PICKED} LoRAs at a time"):
        out = pick(ids.index("mystery"), ids, full, *weights())
    assert all(o == gr.skip() for o in out)
    assert all(o == gr.skip() for o in pick(99, ids, [], *weights()))  # a stale index changes nothing
    engine.lora_infos = [i for i in engine.lora_infos if i.name != "mystery"]
    with pytest.warns(UserWarning, match="mystery is no longer in the LoRA folders"):
        pick(ids.index("mystery"), ids, [], *weights())


def test_remove_moves_the_rows_below_up(engine):
    t = Translator("zh", strict=True)
    out = lora_panel.make_remove(t, 0)(["a", "b", "c"], *weights(0.1, 0.2, 0.3))
    picked, rows, sliders = rows_of(out)
    assert picked == ["b", "c"]
    assert [(s.label, s.value) for s in sliders[:3]] == [("b", 0.2), ("c", 0.3), ("权重", DEFAULT_WEIGHT)]
    assert [r.visible for r in rows[:3]] == [True, True, False]
    out = lora_panel.make_remove(t, 5)(["a"], *weights(0.1))  # a hidden row: nothing to do
    assert all(o == gr.skip() for o in out)


def test_insert_tags_moves_the_rows_into_the_prompt(engine, capsys):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    insert = handler(demo, "insert_lora_tags")
    assert insert.outputs[0].label == EN["txt2img.prompt"] and insert.inputs[0] is insert.outputs[0]
    out = insert.fn("a face", ["soft_light", "Film_Grain"], *weights(0.55, 1.0))
    prompt = out[0]
    assert prompt == "a face, <lora:soft_light:0.55>, <lora:Film_Grain:1>"
    assert "2 LoRA tag(s) inserted" in capsys.readouterr().out
    picked, rows, _sliders = rows_of(out[1:])
    assert picked == [] and all(r.visible is False for r in rows)  # not applied twice
    clean, tags = parse_prompt_loras(prompt)
    assert clean == "a face" and [(x.name, x.unet_weight, x.te_weight) for x in tags] == \
        [("soft_light", 0.55, 0.55), ("Film_Grain", 1.0, 1.0)]
    # the engine reads the tags back
    list(endpoint(demo, "generate")(*txt2img_args(prompt=prompt)))
    assert engine.applied[-1] == [("soft_light", 0.55, 0.55), ("Film_Grain", 1.0, 1.0)]
    assert lora_panel.insert_tags("", [("x", -0.25)]) == "<lora:x:-0.25>"
    assert lora_panel.insert_tags("a face,", [("x", 0.8)]) == "a face, <lora:x:0.8>"
    assert lora_panel.insert_tags("脸，", [("x", 0.8)]) == "脸， <lora:x:0.8>"
    out = insert.fn("a face", [], *weights())
    assert all(o == gr.skip() for o in out) and "Click a LoRA first" in capsys.readouterr().out


# -- the /generate endpoint --------------------------------------------------------------------------

def test_generate_endpoint_takes_loras_after_styles(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    generate = endpoint(demo, "generate")
    list(generate(*txt2img_args(), [], None, [["soft_light", 0.6], {"name": "mystery", "weight": -0.5}, "Film_Grain"]))
    assert engine.submitted[-1].loras == [("soft_light", 0.6), ("mystery", -0.5), ("Film_Grain", 1.0)]
    list(generate(*txt2img_args()))  # the eleven fields alone still work
    assert engine.submitted[-1].loras == []
    with pytest.raises(gr.Error) as info:
        next(generate(*txt2img_args(), [], None, [["soft_light", "heavy"]]))
    assert info.value.message == "LoRAs: must be a list of [name, weight] pairs"
    with pytest.raises(gr.Error) as info:
        next(generate(*txt2img_args(), [], None, [["soft_light", 1e9]]))
    assert info.value.message == "LoRAs: weights must be between -100 and 100"
    with pytest.raises(gr.Error) as info:
        next(generate(*txt2img_args(), [], None, [["xl_detail", 1]]))
    assert info.value.message == ("LoRA problem: LoRA 'xl_detail' is made for SDXL, but the loaded model "
                                  "is SD 1.5")
    zh = endpoint(build_blocks(engine, Translator("zh", strict=True)), "generate")
    with pytest.raises(gr.Error) as info:
        next(zh(*txt2img_args(), [], None, "soft_light"))
    assert info.value.message == "参数“LoRA”无效：必须是 [名称, 权重] 的列表"
    with pytest.raises(gr.Error) as info:
        next(zh(*txt2img_args(prompt="<lora:nope:1> a face")))
    assert info.value.message == "找不到模型：LoRA 'nope' not found in the LoRA folders"


@pytest.mark.parametrize("lang, expected", [
    ("en", "⚠️ 12 LoRA layer(s) matched no module, e.g. lora_unet_mid_block_attn, lora_te_text_model_x"),
    ("zh", "⚠️ 12 个 LoRA 层没有匹配到任何模块，例如 lora_unet_mid_block_attn, lora_te_text_model_x"),
])
def test_generation_notes_are_shown(engine, lang, expected):
    demo = build_blocks(engine, Translator(lang, strict=True))
    engine.notes = [UNMATCHED, "x_y: <odd> *note*"]
    with pytest.warns(UserWarning) as record:
        final = list(endpoint(demo, "generate")(*txt2img_args(), [], None, [["soft_light", 0.8]]))[-1]
    progress = final[2]
    assert progress.startswith("Done: 2 image(s)" if lang == "en" else "完成：2 张图片")
    assert expected in progress
    assert "⚠️ x_y: \\<odd\\> \\*note\\*" in progress  # unknown notes as they are, Markdown escaped
    warned = [str(w.message) for w in record]
    assert expected[3:] in warned and "x_y: <odd> *note*" in warned
    engine.notes = []
    final = list(endpoint(demo, "generate")(*txt2img_args()))[-1]
    assert "⚠️" not in final[2]


# -- the Merge tab ------------------------------------------------------------------------------------

MERGE_ROWS = [["soft_light", 1.0, 0.5], ["Film_Grain", 0.7]]


def test_merge_yields_progress_then_the_new_model_and_refreshes_the_lists(engine, capsys):
    demo = build_blocks(engine, Translator("en", strict=True))
    merge = endpoint(demo, "merge_lora")
    engine.gate.clear()
    gen = merge("tiny-sd15", MERGE_ROWS, " my-merge ", "single-file", "fp16")
    seen = run_until(gen, lambda out: out[0].startswith("Fusing"))
    assert seen[-1] == ("Fusing 3/6 …", gr.skip())
    engine.gate.set()
    text, result = list(gen)[-1]
    assert text == "✅ Saved **my-merge** (/m/my-merge.safetensors). It is in the checkpoint list now."
    assert result == {"name": "my-merge", "title": "my-merge", "location": "/m/my-merge.safetensors",
                      "format": "single-file", "family": "sd15"}
    assert "Saved my-merge" in capsys.readouterr().out
    assert engine.merges[-1] == ("tiny-sd15", [("soft_light", 1.0, 0.5), ("Film_Grain", 0.7, 0.7)], "my-merge",
                                 "single-file", "fp16")

    # after a successful merge from the button, the page refreshes the model lists
    button = handler(demo, "merge_from_rows")
    after = handler(demo, "refresh_after_merge")
    assert demo.fns[after.trigger_after] is button and after.trigger_only_on_success
    header, base, summary, table = after.fn()
    labels = [getattr(c, "label", None) for c in after.outputs]
    assert labels[:2] == [EN["model.label"], EN["merge.base"]]
    assert "my-merge" in [value for _label, value in header.choices]
    assert "my-merge" in [value for _label, value in base.choices]
    assert summary == "5 model(s), 4 supported" and any(row[0] == "my-merge" for row in table)


def test_merge_button_reads_the_rows(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    button = handler(demo, "merge_from_rows")
    assert button.api_visibility == "private"
    # rows: (LoRA, U-Net weight, text-encoder weight) x 4; empty rows are skipped
    final = list(button.fn("tiny-sd15", "ui-merge", "diffusers", "bf16",
                           "soft_light", 0.8, 0.4, None, 1.0, 1.0, "", 1.0, 1.0, "Film_Grain", -0.5, 1.0))[-1]
    assert engine.merges[-1] == ("tiny-sd15", [("soft_light", 0.8, 0.4), ("Film_Grain", -0.5, 1.0)], "ui-merge",
                                 "diffusers", "bf16")
    assert final[1]["location"] == "/m/ui-merge" and final[1]["format"] == "diffusers"


@pytest.mark.parametrize("args, en, zh", [
    (("tiny-sd15", MERGE_ROWS, "  "), "Output name: is required", "参数“输出名称”无效：不能为空"),
    ((None, MERGE_ROWS, "x"), "Base model: is required", "参数“基础模型”无效：不能为空"),
    (("tiny-sd15", [], "x"), "LoRAs: give at least one LoRA with a non-zero weight",
     "参数“LoRA”无效：至少需要一个权重不为 0 的 LoRA"),
    (("tiny-sd15", [["soft_light", 0, 0]], "x"), "LoRAs: give at least one LoRA with a non-zero weight",
     "参数“LoRA”无效：至少需要一个权重不为 0 的 LoRA"),  # raised by the job
    (("tiny-sd15", MERGE_ROWS, "tiny-zimage"),
     "Output name: tiny-zimage.safetensors already exists in /m (choose another name)",
     "参数“输出名称”无效：/m 中已存在 tiny-zimage.safetensors（请换一个名称）"),
    (("tiny-sd15", MERGE_ROWS, "x", "zip"), "Format: must be one of single-file, diffusers, not 'zip'",
     "参数“格式”无效：只能是 single-file, diffusers，不能是 'zip'"),
    (("tiny-sd15", [["xl_detail", 1, 1]], "x"),
     "LoRA problem: LoRA 'xl_detail' is made for SDXL, but the loaded model is SD 1.5",
     "LoRA 出错：LoRA 'xl_detail' is made for SDXL, but the loaded model is SD 1.5"),
    (("tiny-sd15", MERGE_ROWS, "../evil"), "Name refused: '../evil' leaves the models folder",
     "名称被拒绝：'../evil' leaves the models folder"),
    (("nope", MERGE_ROWS, "x"), "Model not found: no model named 'nope'", "找不到模型：no model named 'nope'"),
    (("tiny-sd15", [["soft_light", "a lot"]], "x"),
     "LoRAs: must be a list of [name, U-Net weight, text-encoder weight] rows",
     "参数“LoRA”无效：必须是 [名称, U-Net 权重, 文本编码器权重] 的列表"),
])
def test_merge_errors_are_translated(engine, args, en, zh):
    for lang, expected in (("en", en), ("zh", zh)):
        merge = merge_tab.make_merge(engine, Translator(lang, strict=True), poll_s=0.01)
        with pytest.raises(gr.Error) as info:
            list(merge(*args))
        assert info.value.message == expected
        assert info.value.title == (EN if lang == "en" else ZH)["error.title"]
    assert [e.name for e in engine.entries] == ["tiny-sd15", "tiny-zimage", "broken", "old"]


def test_interrupted_merge_says_nothing_was_written(engine):
    t = Translator("en", strict=True)
    gen = merge_tab.make_merge(engine, t, poll_s=0.01)("tiny-sd15", MERGE_ROWS, "stopped")
    engine.gate.clear()
    run_until(gen, lambda out: out[0].startswith("Fusing"))
    assert engine.interrupt()
    engine.gate.set()
    with pytest.warns(UserWarning, match="Interrupted at step 3/6"):
        rest = list(gen)
    assert rest[-1] == ("Merge stopped at stage 3/6; nothing was written", None)
    assert "stopped" not in [e.name for e in engine.entries]


def test_merge_phases_in_words():
    t = Translator("zh", strict=True)
    assert merge_tab.phase_text(t, "loading") == "正在加载基础模型"
    assert merge_tab.phase_text(t, "merging: loading LoRA soft_light") == "正在加载 LoRA soft_light"
    assert merge_tab.phase_text(t, "merging: reusing loaded LoRA a") == "正在加载 LoRA a"
    assert merge_tab.phase_text(t, "merging: converting to bf16") == "正在转换为 bf16"
    assert merge_tab.phase_text(t, "merging: writing m.safetensors") == "正在写入 m.safetensors"
    assert merge_tab.phase_text(t, "merging: fusing") == "正在融合"
    assert merge_tab.phase_text(t, "queued") == "正在开始"


def test_base_model_picks_the_lora_choices(engine):
    t = Translator("en", strict=True)
    demo = build_blocks(engine, t)
    base = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == EN["merge.base"])
    assert [c[1] for c in base.choices] == ["tiny-sd15", "tiny-zimage", "broken"] and base.value == "tiny-sd15"
    row = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "LoRA 1")
    assert row.choices == [("Film_Grain · Stable Diffusion 1.5", "Film_Grain"), ("mystery · family unknown", "mystery"),
                           ("soft_light · Stable Diffusion 1.5", "soft_light")]
    changed = handler(demo, "base_changed").fn("tiny-zimage", "soft_light", "mystery", None, None)
    assert [c[1] for c in changed[0].choices] == ["aw_portrait_z", "mystery"]
    assert changed[0].value is None and changed[1].value == "mystery"  # kept where still offered
    assert changed[-1].visible is False
    engine.lora_infos = engine.lora_infos[:1]  # only the SDXL one
    refreshed = handler(demo, "refresh_merge_loras").fn("tiny-sd15", None, None, None, None)
    assert engine.lora_scans == 1 and refreshed[0].choices == []
    assert refreshed[-1].visible is True and refreshed[-1].value == EN["merge.no_loras"]


# -- the whole page ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_builds_with_lora_picker_and_merge_tab(engine, lang):
    t = Translator(lang, strict=True)
    table = EN if lang == "en" else ZH
    demo = build_blocks(engine, t)
    assert not t.missing
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert {table["tab.merge"], table["lora.title"], table["lora.search"], table["merge.base"],
            table["merge.out_name"], table["merge.format"], table["merge.dtype"]} <= labels
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert {"generate", "merge_lora", "generate_preset"} <= public
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == table["lora.weight"]]
    assert len(sliders) == MAX_PICKED
    assert all((s.minimum, s.maximum, s.step, s.value) == (-1.0, 2.0, 0.05, 0.8) for s in sliders)
    buttons = {b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert table["lora.insert_tags"] in buttons and table["merge.run"] in buttons


def test_generate_and_merge_over_gradio_client(engine, tmp_path):
    from gradio_client import Client

    demo = build_blocks(engine, Translator("en", strict=True))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path),
                        analytics_enabled=False)
        # eleven fields, styles, then the LoRAs
        _gallery, infotext, status = client.predict("a face", "", "Euler", 3, 7.0, 64, 64, 5, 1, 1, 1, [],
                                                    [["soft_light", 0.5]], api_name="/generate")
        assert "Seed: 5" in infotext and status.startswith("Done: 1 image(s)")
        assert engine.submitted[-1].loras == [("soft_light", 0.5)]
        client.predict("a face", "", "Euler", 3, 7.0, 64, 64, 5, 1, 1, 1, api_name="/generate")
        assert engine.submitted[-1].loras == []
        text, result = client.predict("tiny-sd15", [["Film_Grain", 0.9, 0.3]], "api-merge", "single-file", "fp32",
                                      api_name="/merge_lora")
        assert text.startswith("✅ Saved **api-merge**") and result["name"] == "api-merge"
        assert engine.merges[-1][1] == [("Film_Grain", 0.9, 0.3)] and engine.merges[-1][4] == "fp32"
        with pytest.raises(Exception, match="Output name: is required"):
            client.predict("tiny-sd15", [["Film_Grain", 1]], "", "single-file", "fp16", api_name="/merge_lora")
    finally:
        demo.close()
