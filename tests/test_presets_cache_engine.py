"""Presets, styles and the prompt-embedding cache, wired through the engine on tiny models."""
from __future__ import annotations

import time

import pytest

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.engine import Engine
from modules.errors import InvalidRequest
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.outputs.infotext import parse_infotext
from modules.settings import Settings
from modules.styles import Style, save_styles

SMALL = dict(width=64, height=64, steps=2, save=False)


@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    for family in Family:
        tiny_models(family, "diffusers")
    root = tmp_path_factory.mktemp("engine3")
    styles = root / "styles.csv"
    save_styles(styles, [Style("film", "{prompt}, 35mm film grain", "digital"), Style("warm", "warm tones", "")])
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=root / "out", cache_dir=root / "cache",
                          hf_cache=root / "no-hf", presets_dir=root / "user-presets", styles_file=styles))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def gen(engine, **fields):
    return engine.generate(GenerationRequest(**{**SMALL, **fields})).wait(120)


def test_preset_template_and_infotext(engine):
    result = gen(engine, model="tiny-sd15-diffusers-0", prompt="a young woman", preset="realistic_portrait",
                 seed=3)
    prompt, negative, params = parse_infotext(result.infotexts[0])
    preset = engine.preset("realistic_portrait")
    assert prompt == preset.prompt.replace("{prompt}", "a young woman")
    assert negative == preset.negative_prompt
    assert params["Preset"] == "realistic_portrait"


def test_preset_fills_unset_parameters(engine):
    job = engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", preset="anime", prompt="x",
                                            width=64, height=64, steps=2, save=False))
    result = job.wait(120)
    params = parse_infotext(result.infotexts[0])[2]
    expected = engine.preset("anime").params_for(Family.SD15)
    assert params["Sampler"] == expected.sampler
    assert float(params["CFG scale"]) == expected.cfg_scale
    assert params.get("Clip skip", "1") == str(expected.clip_skip or 1)


def test_unknown_preset_and_style_are_clear_errors(engine):
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", preset="nope"))
    assert info.value.field == "preset"
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", styles=["missing"]))
    assert info.value.field == "styles" and "missing" in info.value.rule


def test_styles_apply_in_order(engine):
    result = gen(engine, model="tiny-sd15-diffusers-0", prompt="a man", negative_prompt="blurry",
                 styles=["film", "warm"], seed=1)
    prompt, negative, params = parse_infotext(result.infotexts[0])
    assert prompt == "a man, 35mm film grain, warm tones"
    assert negative == "blurry, digital"
    assert params["Styles"] == "film, warm"


def _count_text_encoder_calls(engine, monkeypatch, model):
    engine.switch_model(model).wait(120)
    assert engine.wait_for_warming(120)  # the background warm-up also runs the text encoder
    pipe = engine.manager.current.pipe
    calls = []
    encoder = pipe.text_encoder
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("family", list(Family))
def test_cached_and_uncached_images_are_identical(engine, monkeypatch, family):
    model = f"tiny-{family.value}-diffusers-0"
    calls = _count_text_encoder_calls(engine, monkeypatch, model)
    prompt = f"cache test {family.value} {time.time_ns()}"  # never seen before: a miss
    cfg = 2.0
    before = engine.cache_stats()
    first = gen(engine, model=model, prompt=prompt, negative_prompt="bad", seed=11, cfg_scale=cfg)
    assert calls, "the first generation must run the text encoder"
    calls.clear()
    second = gen(engine, model=model, prompt=prompt, negative_prompt="bad", seed=11, cfg_scale=cfg)
    assert calls == [], "a cache hit must not call the text encoder"
    after = engine.cache_stats()
    assert after.hits >= before.hits + 1 and after.misses >= before.misses + 1
    assert first.images[0].tobytes() == second.images[0].tobytes()


def test_clip_skip_is_part_of_the_key(engine, monkeypatch):
    calls = _count_text_encoder_calls(engine, monkeypatch, "tiny-sd15-diffusers-0")
    prompt = f"clip skip key {time.time_ns()}"
    gen(engine, model="tiny-sd15-diffusers-0", prompt=prompt, seed=1)
    calls.clear()
    gen(engine, model="tiny-sd15-diffusers-0", prompt=prompt, seed=1, clip_skip=2)
    assert calls, "another clip skip must not reuse the cached embeddings"


def test_presets_are_warmed_in_the_background_after_a_load(engine):
    engine.switch_model("tiny-sdxl-diffusers-0").wait(120)
    keys = []
    loaded = engine.manager.current
    from modules.generation.encoding import uses_cfg
    from modules.presets import apply_preset
    from modules.engine.warmup import embedding_key
    for preset in engine.presets():
        f = apply_preset(preset, "", Family.SDXL)
        keys.append(embedding_key(loaded, "", f["prompt"], f["negative_prompt"],
                                  uses_cfg(Family.SDXL, f["cfg_scale"]), f["clip_skip"]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(engine.embed_cache.contains(k) for k in keys):
        time.sleep(0.2)
    assert all(engine.embed_cache.contains(k) for k in keys)


def test_warm_up_gives_up_when_encoding_is_slow(engine, monkeypatch):
    """A text encoder slower than WARM_MAX_ENCODE_S (a 4B encoder on a CPU) stops the warm-up after one entry."""
    monkeypatch.setattr(engine.warmup, "max_encode_s", 0.0)
    engine.switch_model("tiny-zimage-diffusers-0").wait(120)
    assert engine.wait_for_warming(120)
    engine.embed_cache.clear()  # nothing is warming now: only the next load's warm-up adds entries
    engine.switch_model("tiny-sd15-diffusers-0").wait(120)
    assert engine.wait_for_warming(120)
    assert engine.cache_stats().entries == 1
