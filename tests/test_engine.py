"""The engine end to end on tiny models: every family and format, samplers, seeds, infotext, switching."""
from __future__ import annotations

import gc
import os

import psutil
import pytest
from PIL import Image

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.engine import Engine
from modules.errors import InvalidRequest
from modules.families import SD_SAMPLERS, Family
from modules.generation.params import GenerationRequest
from modules.outputs.infotext import parse_infotext, request_from_infotext
from modules.outputs.saving import read_png_parameters
from modules.settings import Settings

TINY = dict(width=64, height=64, steps=2)


@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    for family in Family:
        for fmt in ("diffusers", "single-file"):
            tiny_models(family, fmt)
    out = tmp_path_factory.mktemp("outputs")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=out, cache_dir=tiny_folders.cache,
                          hf_cache=tiny_folders.cache / "no-hf-cache", ckpt_cache=2))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def run(engine, **fields):
    return engine.generate(GenerationRequest(**{**TINY, **fields})).wait(120)


@pytest.mark.parametrize("family", list(Family))
@pytest.mark.parametrize("fmt", ["diffusers", "single-file"])
def test_generate_each_family_and_format(engine, family, fmt):
    name = f"tiny-{family.value}-{fmt}-0"
    result = run(engine, model=name, prompt="a portrait, 人像", seed=1234, batch_size=2)
    assert result.seeds == [1234, 1235]
    assert len(result.images) == 2 and all(isinstance(i, Image.Image) for i in result.images)
    assert result.images[0].size == (64, 64)
    # saved with A1111 infotext that parses back to the request
    text = read_png_parameters(result.paths[1])
    assert text == result.infotexts[1]
    prompt, negative, params = parse_infotext(text)
    assert prompt == "a portrait, 人像"
    assert params["Seed"] == "1235" and params["Size"] == "64x64" and params["Steps"] == "2"
    assert params["Model"] == name and len(params["Model hash"]) == 10
    fields = request_from_infotext(text)
    assert fields["seed"] == 1235 and fields["width"] == 64


def test_same_seed_same_pixels_and_different_seed_differs(engine):
    a = run(engine, model="tiny-sd15-diffusers-0", seed=7, save=False)
    b = run(engine, model="tiny-sd15-diffusers-0", seed=7, save=False)
    c = run(engine, model="tiny-sd15-diffusers-0", seed=8, save=False)
    assert a.images[0].tobytes() == b.images[0].tobytes()
    assert a.images[0].tobytes() != c.images[0].tobytes()


def test_random_seed_is_reported_and_reproducible(engine):
    first = run(engine, model="tiny-sd15-diffusers-0", seed=-1, save=False)
    again = run(engine, model="tiny-sd15-diffusers-0", seed=first.seeds[0], save=False)
    assert first.seeds[0] >= 0
    assert first.images[0].tobytes() == again.images[0].tobytes()


@pytest.mark.parametrize("sampler", SD_SAMPLERS)
def test_every_sd_sampler_runs(engine, sampler):
    result = run(engine, model="tiny-sd15-diffusers-0", sampler=sampler, seed=3, save=False)
    assert len(result.images) == 1


def test_clip_skip_changes_the_image(engine):
    base = run(engine, model="tiny-sd15-diffusers-0", seed=5, save=False, prompt="a face")
    skip = run(engine, model="tiny-sd15-diffusers-0", seed=5, save=False, prompt="a face", clip_skip=2)
    assert base.images[0].tobytes() != skip.images[0].tobytes()
    assert "Clip skip: 2" in skip.infotexts[0]


def test_batch_count_runs_several_calls(engine):
    result = run(engine, model="tiny-sdxl-diffusers-0", seed=10, batch_count=2, save=False)
    assert result.seeds == [10, 11] and len(result.images) == 2


def test_zimage_defaults_are_turbo(engine):
    req = GenerationRequest().with_defaults(Family.ZIMAGE)
    assert (req.steps, req.cfg_scale, req.sampler) == (8, 0.0, "Euler (flow match)")
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(model="tiny-zimage-diffusers-0", sampler="Euler a"))
    assert info.value.field == "sampler"


@pytest.mark.parametrize("field,value", [("width", 65), ("height", 4096), ("steps", 0), ("batch_size", 99),
                                         ("cfg_scale", 31.0), ("seed", -2)])
def test_bad_requests_fail_at_submit(engine, field, value):
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", **{field: value}))
    assert info.value.field == field


def _rss() -> int:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss


def test_switching_twenty_times_does_not_leak(engine):
    """Three models, ram cache 2: after a warm-up round, 20 switches grow RSS by < 64 MiB."""
    names = ["tiny-sd15-diffusers-0", "tiny-sdxl-single-file-0", "tiny-zimage-diffusers-0"]
    for name in names * 2:  # warm-up: allocator arenas and lazily built objects settle
        engine.switch_model(name).wait(120)
    baseline = _rss()
    for i in range(20):
        engine.switch_model(names[i % 3]).wait(120)
    growth = _rss() - baseline
    assert growth < 64 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 20 switches"
    assert len(engine.status().in_ram) <= 2
