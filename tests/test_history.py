"""History: outputs by date, trash (never delete), and "send to txt2img" reproducing an image on a tiny model."""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.errors import InvalidRequest, UnsafeName
from modules.outputs import history
from modules.outputs.saving import read_png_parameters, save_png


def make_outputs(root: Path) -> dict[str, Path]:
    out = root / "txt2img"
    made = {}
    for day, seed in (("2026-01-02", 1), ("2026-01-02", 2), ("2026-03-04", 3)):
        image = Image.new("RGB", (8, 8), (seed * 40, 0, 0))
        path = save_png(image, f"p{seed}\nSteps: 1, Seed: {seed}", out, seed, now=datetime.fromisoformat(day))
        os.utime(path, (1_700_000_000 + seed, 1_700_000_000 + seed))
        made[f"{day}/{seed}"] = path
    (out / "2026-05-06").mkdir()  # an empty day is not listed
    (out / "not-a-date").mkdir()
    (out / "2026-03-04" / "notes.txt").write_text("x")
    return made


def test_dates_and_images_newest_first(tmp_path):
    made = make_outputs(tmp_path)
    assert history.list_dates(tmp_path) == ["2026-03-04", "2026-01-02"]
    items = history.list_images(tmp_path, "2026-01-02")
    assert [i.name for i in items] == ["txt2img/2026-01-02/00001-2.png", "txt2img/2026-01-02/00000-1.png"]
    assert items[0].path == made["2026-01-02/2"] and items[0].infotext == "p2\nSteps: 1, Seed: 2"
    assert [i.name for i in history.list_images(tmp_path, "2026-03-04")] == ["txt2img/2026-03-04/00000-3.png"]
    assert history.list_dates(tmp_path / "missing") == []
    with pytest.raises(InvalidRequest):
        history.list_images(tmp_path, "../etc")


def test_trash_moves_keeps_name_and_never_overwrites(tmp_path):
    made = make_outputs(tmp_path)
    name = "txt2img/2026-01-02/00000-1.png"
    data = made["2026-01-02/1"].read_bytes()
    moved = history.move_to_trash(tmp_path, name)
    assert moved == tmp_path / "trash" / "2026-01-02" / "00000-1.png"
    assert moved.read_bytes() == data and not made["2026-01-02/1"].exists()
    assert [i.name for i in history.list_images(tmp_path, "2026-01-02")] == ["txt2img/2026-01-02/00001-2.png"]
    # a second file of the same name (e.g. the folder was emptied and the counter restarted) goes beside it
    again = save_png(Image.new("RGB", (8, 8)), "again", tmp_path / "elsewhere", 1, now=datetime(2026, 1, 2))
    again.rename(made["2026-01-02/1"])
    second = history.move_to_trash(tmp_path, name)
    assert second.name == "00000-1 (2).png" and moved.read_bytes() == data
    assert read_png_parameters(second) == "again"
    assert "2026-01-02" in history.list_dates(tmp_path)  # 00001-2 is still there; the trash is never listed


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "txt2img/../../x.png", "trash/2026-01-02/00000-1.png",
                                  "txt2img/2026-03-04/notes.txt", "txt2img/2026-03-04/nope.png", "txt2img/x.png", ""])
def test_refused_names(tmp_path, name):
    make_outputs(tmp_path)
    (tmp_path / "trash" / "2026-01-02").mkdir(parents=True)
    (tmp_path / "trash" / "2026-01-02" / "00000-1.png").write_bytes(b"")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises((InvalidRequest, UnsafeName)):
        history.move_to_trash(tmp_path, name)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_symlink_out_of_outputs_is_refused(tmp_path):
    make_outputs(tmp_path / "out")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    (tmp_path / "out" / "txt2img" / "2026-01-02" / "link.png").symlink_to(secret)
    with pytest.raises(UnsafeName):
        history.move_to_trash(tmp_path / "out", "txt2img/2026-01-02/link.png")
    assert secret.read_bytes() == b"not yours"


# -- the page's handlers on a real engine with a tiny model ----------------------------------------------

@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    from modules.engine import Engine
    from modules.settings import Settings

    tiny_models("sd15", "diffusers")
    root = tmp_path_factory.mktemp("history-engine")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=root / "outputs", cache_dir=root / "cache",
                          hf_cache=root / "no-hf", presets_dir=root / "presets", styles_file=root / "styles.csv",
                          warm_presets=False, embed_cache_persist=False, model="tiny-sd15-diffusers-0"))
    eng.start().wait(180)
    yield eng
    eng.close()


def last(gen):
    out = None
    for out in gen:
        pass
    return out


def test_send_to_txt2img_then_generate_gives_the_same_pixels(engine):
    import gradio as gr

    from modules.ui import make_send_to_txt2img
    from modules.ui import history_tab, txt2img
    from modules.ui.i18n import Translator

    t = Translator("en")
    generate = txt2img.make_generate(engine, t, poll_s=0.02)
    first = last(generate("a portrait, soft light", "blurry", "Euler a", 3, 6.5, 64, 96, 31337, 1, 1, 1))
    assert "Seed: 31337" in first[1]
    today = datetime.now().strftime("%Y-%m-%d")
    assert history_tab.dates(engine)[0] == today
    gallery, names, summary, _info, _sel = history_tab.day_updates(t, engine, today)
    assert len(names) == 1 and "1 image(s)" in summary
    original = history.resolve_image(engine.folders.outputs, names[0])

    class Select:  # what Gradio passes for a click on the first thumbnail
        index = 0
    text, selected = history_tab.make_select(engine, t)(names, Select())
    assert selected == names[0] and text == read_png_parameters(original)

    updates = make_send_to_txt2img(engine, t)(text)
    fields = updates[:len(txt2img.PARAM_FIELDS)]
    assert isinstance(updates[-1], gr.Tabs)
    values = dict(zip(txt2img.PARAM_FIELDS, fields))
    assert values["seed"] == 31337 and values["prompt"] == "a portrait, soft light" and values["height"] == 96
    # fields the infotext lacks are skipped (the page keeps what it shows: batch 1 by default)
    shown = {"batch_size": 1, "batch_count": 1, "clip_skip": 1}
    args = [shown.get(name) if isinstance(values[name], dict) else values[name] for name in txt2img.PARAM_FIELDS]
    second = last(generate(*args))
    assert second[1] == first[1]
    time.sleep(0.05)
    copies = sorted((engine.folders.outputs / "txt2img" / today).glob("*-31337.png"))
    assert len(copies) == 2
    with Image.open(copies[0]) as a, Image.open(copies[1]) as b:
        assert a.tobytes() == b.tobytes()
