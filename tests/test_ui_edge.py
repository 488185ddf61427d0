"""The Build-edge tab: its handler drives a real build on the tiny SD1.5 model with streamed, translated
progress; the package is listed at once; a bad source model is a translated error."""
from __future__ import annotations

import gradio as gr
import pytest
import torch

from fixtures_models import make_folders
from modules.engine import Engine
from modules.families import Family
from modules.settings import Settings
from modules.taesd import random_taesd
from modules.ui import edge_tab
from modules.ui.i18n import Translator


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    root = tmp_path_factory.mktemp("ui-edge")
    folders = make_folders(root)
    install_tiny_clip_tokenizer(folders)
    make_tiny_model("sd15", "diffusers", folders.checkpoints / "tiny15")
    make_tiny_model("sdxl", "single-file", folders.checkpoints / "tinyxl")
    random_taesd(Family.SD15, seed=0).save_pretrained(str(folders.vae_approx / "taesd"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    eng = Engine(Settings(models_dir=folders.models, outputs_dir=root / "out", cache_dir=root / "cache",
                          hf_cache=root / "no-hf", ckpt_cache=0, embed_cache_persist=False, warm_presets=False))
    eng.start(load_initial=False)
    yield eng
    eng.close()
    torch.set_num_threads(old)


def test_stage_text_translates_and_keeps_counters():
    zh = Translator("zh")
    assert edge_tab.stage_text(zh, "pruning") == "剪枝 U-Net"
    assert edge_tab.stage_text(zh, "distilling 3/20") == "蒸馏 3/20"
    assert edge_tab.stage_text(Translator("en"), "something new") == "something new"


def test_only_sd15_checkpoints_are_sources(engine):
    names = [name for _title, name in edge_tab.source_choices(engine)]
    assert names == ["tiny15"]


def test_build_streams_progress_and_lists_the_package(engine):
    build = edge_tab.wrap_build(edge_tab.make_build(engine, Translator("en"), poll_s=0.01))
    updates = list(build("tiny15", 0.0, 0, "none", "auto", "fused", False, "from-page",
                         None, 1.0, 1.0, None, 1.0, 1.0))
    texts = [u[0] for u in updates[:-1] if isinstance(u[0], str)]
    assert any("Exporting the U-Net" in text for text in texts), texts
    message, summary = updates[-1]
    assert "edge/from-page" in message
    assert summary["name"] == "from-page" and summary["source"] == "tiny15" and summary["unet"] == "fp32"
    assert summary["total_mib"] > 0
    assert "edge/from-page" in [e.name for e in engine.models()]


def test_sdxl_source_is_a_translated_error(engine):
    build = edge_tab.make_build(engine, Translator("zh"), poll_s=0.01)
    with pytest.raises(gr.Error) as err:
        list(build("tinyxl", [], 0.0, 0, "none"))
    assert "SD1" in str(err.value) or "sd15" in str(err.value).lower()
    with pytest.raises(gr.Error):
        list(build("tiny15", [], 2.0, 0, "none"))  # prune ratio out of range
