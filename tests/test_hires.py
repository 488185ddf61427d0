"""Hires fix: request rules, both passes on a tiny SD1.5, its infotext (ours and sd-parsers'), the APIs."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.engine.prepare import Preparer
from modules.errors import InvalidRequest, UnsupportedCapability
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.registry.entry import ModelEntry, ModelFormat

SD = Family("sd15")
MODEL = "tiny-sd15-diffusers-0"
TINY = dict(model=MODEL, width=64, height=64, steps=4, save=False, seed=7)


def _checked(**fields):
    req = GenerationRequest(**{"width": 64, "height": 64, **fields}).with_defaults(SD)
    req.check_inputs(SD)
    return req


# -- 1. request rules (torch-free) ------------------------------------------------------------------------
@pytest.mark.parametrize("fields, field, key", [
    (dict(hr_denoising_strength=0.0), "hr_denoising_strength", "rule.hires_denoise"),
    (dict(hr_denoising_strength=1.5), "hr_denoising_strength", "rule.hires_denoise"),
    (dict(hr_upscaler="R-ESRGAN 4x+"), "hr_upscaler", "rule.choice"),
    (dict(hr_scale=0.5), "hr_scale", "rule.between"),
    (dict(hr_scale=8.0), "hr_scale", "rule.between"),
    (dict(hr_second_pass_steps=-1), "hr_second_pass_steps", "rule.between"),
    (dict(hr_resize_x=4096), "hr_resize_x", "rule.between"),
    (dict(width=1024, height=1024, hr_scale=4.0), "hr_scale", "rule.hires_size"),
    (dict(hr_resize_x=32, hr_resize_y=32), "hr_resize_x", "rule.hires_size"),
    (dict(init_image=Image.new("RGB", (64, 64))), "enable_hr", "rule.hires_txt2img"),
])
def test_hires_rules(fields, field, key):
    with pytest.raises(InvalidRequest) as info:
        _checked(enable_hr=True, **fields)
    assert info.value.field == field and info.value.rule.key == key, str(info.value)


def test_hires_rules_only_apply_when_enabled():
    _checked(hr_denoising_strength=0.0, hr_upscaler="nonsense")  # enable_hr off: nothing to check


def test_zero_denoise_message_is_clear():
    with pytest.raises(InvalidRequest) as info:
        _checked(enable_hr=True, hr_denoising_strength=0.0)
    assert "denoising strength above 0" in str(info.value)


@pytest.mark.parametrize("fields, size", [
    (dict(), (128, 128)), (dict(hr_scale=1.5), (96, 96)), (dict(hr_scale=1.3), (80, 80)),
    (dict(hr_resize_x=128), (128, 128)), (dict(width=128, hr_resize_y=128), (256, 128)),
    (dict(hr_resize_x=96, hr_resize_y=160), (96, 160)),
])
def test_hires_size(fields, size):
    assert _checked(enable_hr=True, **fields).hires_size(SD) == size


def test_edge_package_refuses_hires(tmp_path):
    entry = ModelEntry(name="edge/tiny", path=tmp_path, format=ModelFormat.EDGE, family=SD, source="edge")
    preparer = Preparer(presets=None, styles_file=Path(tmp_path / "styles.csv"), loras=list, lora_roots=list,
                        taesd_available=lambda f: False, taesd_missing=lambda f: "", extensions=None)
    with pytest.raises(UnsupportedCapability) as info:
        preparer.prepare(GenerationRequest(enable_hr=True), entry)
    assert info.value.capability == "hires fix"


def test_hires_infotext_keys():
    from modules.generation.hires import hires_params
    assert hires_params(_checked()) == {}
    assert hires_params(_checked(enable_hr=True)) == {
        "Denoising strength": 0.7, "Hires upscale": 2, "Hires upscaler": "Latent"}
    assert hires_params(_checked(enable_hr=True, hr_resize_x=96, hr_resize_y=128, hr_second_pass_steps=3,
                                 hr_upscaler="Lanczos", hr_denoising_strength=0.5)) == {
        "Denoising strength": 0.5, "Hires resize": "96x128", "Hires steps": 3, "Hires upscaler": "Lanczos"}


# -- 2. the engine on a tiny SD1.5 ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    from modules.engine import Engine
    from modules.settings import Settings
    tiny_models(SD, "diffusers")
    out = tmp_path_factory.mktemp("outputs")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=out, cache_dir=tiny_folders.cache,
                          hf_cache=tiny_folders.cache / "no-hf-cache", ckpt_cache=2))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def _gen(engine, **fields):
    return engine.generate(GenerationRequest(**{**TINY, **fields})).wait(180)


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_doubles_the_size_and_its_infotext_parses(engine, upscaler):
    from modules.outputs.infotext import parse_infotext
    result = _gen(engine, enable_hr=True, hr_upscaler=upscaler, hr_second_pass_steps=6, hr_denoising_strength=0.5)
    assert [im.size for im in result.images] == [(128, 128)]
    _prompt, _negative, params = parse_infotext(result.infotexts[0])
    assert params["Size"] == "64x64"  # A1111: Size is the first pass's
    assert params["Hires upscale"] == "2" and params["Hires steps"] == "6"
    assert params["Hires upscaler"] == upscaler and params["Denoising strength"] == "0.5"


def test_hires_progress_counts_both_passes(engine):
    import threading
    seen = []
    job = engine.generate(GenerationRequest(**TINY, enable_hr=True, hr_second_pass_steps=4,
                                            hr_denoising_strength=0.5))
    done = threading.Event()

    def watch():
        while not job.finished:
            p = job.progress
            seen.append((p.phase, p.step, p.total))
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    job.wait(180)
    done.wait(10)
    totals = {total for phase, _s, total in seen if phase in ("denoising", "hires")}
    assert totals == {4 + 2}, seen[-5:]  # 4 first-pass steps + 4 x 0.5 second-pass steps
    assert any(phase == "hires" for phase, _s, _t in seen)


def test_hires_differs_from_a_plain_upscale(engine):
    import numpy as np
    plain = _gen(engine, enable_hr=True, hr_upscaler="Lanczos", hr_denoising_strength=0.05).images[0]
    refined = _gen(engine, enable_hr=True, hr_upscaler="Lanczos", hr_denoising_strength=0.9).images[0]
    assert np.abs(np.asarray(plain, float) - np.asarray(refined, float)).mean() > 1


def test_sd_parsers_reads_it_as_a1111(engine, tmp_path):
    sd_parsers = pytest.importorskip("sd_parsers")
    from modules.outputs.saving import save_png
    result = _gen(engine, enable_hr=True, prompt="a portrait", negative_prompt="blurry")
    path = save_png(result.images[0], result.infotexts[0], tmp_path, result.seeds[0])
    info = sd_parsers.ParserManager().parse(str(path))
    assert info is not None and info.generator.name.upper().startswith("AUTOMATIC1111"), info
    assert [p.value for p in info.prompts] == ["a portrait"]
    assert [p.value for p in info.negative_prompts] == ["blurry"]
    metadata = info.metadata
    assert metadata.get("Hires upscale") == "2" and metadata.get("Hires upscaler") == "Latent", metadata
    assert metadata.get("Denoising strength") == "0.7"


def test_zero_denoise_is_refused_with_nothing_queued(engine):
    before = set(Path(engine.settings.outputs_dir).rglob("*"))
    queued = engine.queue_length() if hasattr(engine, "queue_length") else None
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(**{**TINY, "save": True}, enable_hr=True, hr_denoising_strength=0.0))
    assert info.value.field == "hr_denoising_strength"
    assert set(Path(engine.settings.outputs_dir).rglob("*")) == before
    if queued is not None:
        assert engine.queue_length() == queued


# -- 3. the APIs (in process) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(engine):
    from api_fixtures import make_client
    from modules.api import ApiLimits
    return make_client(engine, engine.settings, ApiLimits(max_side=256, max_steps=8, max_batch_size=2,
                                                          max_batch_count=2))


def test_hires_size_is_held_to_the_server_limits(engine):
    from api_fixtures import TEST_LIMITS, make_client
    small = make_client(engine, engine.settings, TEST_LIMITS)  # max_side 96: the 128 second pass is over it
    r = small.post("/sdapi/v1/txt2img", json={**A1111, "enable_hr": True})
    assert r.status_code == 422 and "hr_scale" in r.text, r.text


A1111 = dict(steps=2, width=64, height=64, sampler_name="Euler a", seed=11,
             override_settings={"sd_model_checkpoint": MODEL})


def _unb64(text: str):
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_sdapi_txt2img_enable_hr_doubles_the_size(client):
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
                                               "hr_second_pass_steps": 2, "denoising_strength": 0.6})
    assert r.status_code == 200, r.text
    body = r.json()
    image = _unb64(body["images"][0])
    assert image.size == (128, 128)
    info = json.loads(body["info"])
    assert "enable_hr" not in info.get("visage_ignored", [])
    assert info["denoising_strength"] == 0.6
    assert "Hires upscale: 2" in info["infotexts"][0] and "Hires upscaler: Latent" in info["infotexts"][0]
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "enable_hr": True, "hr_resize_x": 96, "hr_resize_y": 128})
    assert r.status_code == 200, r.text
    assert _unb64(r.json()["images"][0]).size == (96, 128)
    assert "Hires resize: 96x128" in json.loads(r.json()["info"])["infotexts"][0]


def test_sdapi_zero_denoise_with_hires_is_a_422(client, engine):
    before = set(Path(engine.settings.outputs_dir).rglob("*"))
    r = client.post("/sdapi/v1/txt2img", json={**A1111, "enable_hr": True, "denoising_strength": 0,
                                               "save_images": True})
    assert r.status_code == 422, r.text
    assert "hr_denoising_strength" in r.text or "denoising_strength" in r.text
    assert set(Path(engine.settings.outputs_dir).rglob("*")) == before


def test_native_generate_takes_the_hires_fields(client):
    r = client.post("/api/v1/generate", json={"model": MODEL, "steps": 2, "width": 64, "height": 64, "seed": 2,
                                              "save": False, "enable_hr": True, "hr_upscaler": "Nearest",
                                              "hr_scale": 1.5, "hr_denoising_strength": 0.5})
    assert r.status_code == 200, r.text
    text = r.json()["infotexts"][0]
    assert "Hires upscale: 1.5" in text and "Hires upscaler: Nearest" in text


# -- 4. the page ------------------------------------------------------------------------------------------
def test_page_request_carries_the_hires_inputs():
    from modules.ui.txt2img import request_from_inputs
    req = request_from_inputs("p", "", None, 4, 7, 64, 64, 1, 1, 1, 1, hires=(True, "Lanczos", 2.0, 0, 0.4))
    assert req.enable_hr and req.hr_upscaler == "Lanczos" and req.hr_denoising_strength == 0.4
    assert not request_from_inputs("p", "", None, 4, 7, 64, 64, 1, 1, 1, 1).enable_hr
