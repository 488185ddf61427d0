"""img2img and inpainting: request rules, capability choice, masks, the engine on tiny models, the APIs."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.backends.base import Capability
from modules.engine.prepare import Preparer
from modules.errors import InvalidRequest, UnsupportedCapability
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.registry.entry import ModelEntry, ModelFormat

SD = Family("sd15")


def _image(size=(64, 64), color=(200, 120, 80)):
    return Image.new("RGB", size, color)


def _mask(size=(64, 64), box=(16, 16, 48, 48)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def _checked(**fields):
    req = GenerationRequest(**fields).with_defaults(SD)
    req.check_inputs(SD)
    return req


# -- 1. request rules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, field, key", [
    (dict(mask=_mask()), "mask", "rule.mask_needs_image"),
    (dict(init_image=_image(), mask=_mask((32, 64))), "mask", "rule.mask_size"),
    (dict(init_image="not an image"), "init_image", "rule.image"),
    (dict(init_image=_image(), mask=b"png"), "mask", "rule.image"),
    (dict(init_image=_image(), denoising_strength=1.5), "denoising_strength", "rule.between"),
    (dict(init_image=_image(), denoising_strength=-0.1), "denoising_strength", "rule.between"),
    (dict(init_image=_image(), resize_mode=3), "resize_mode", "rule.choice"),
    (dict(init_image=_image(), mask=_mask(), mask_blur=65), "mask_blur", "rule.between"),
    (dict(init_image=_image(), mask=_mask(), inpaint_full_res_padding=-1), "inpaint_full_res_padding",
     "rule.between"),
    (dict(init_image=_image(), mask=_mask(), inpainting_fill=4), "inpainting_fill", "rule.choice"),
])
def test_image_rules(fields, field, key):
    with pytest.raises(InvalidRequest) as info:
        _checked(**fields)
    assert info.value.field == field and info.value.rule.key == key, str(info.value)


def test_mask_size_message_names_both_sizes():
    with pytest.raises(InvalidRequest) as info:
        _checked(init_image=_image((64, 64)), mask=_mask((32, 64)))
    assert "64x64" in str(info.value) and "32x64" in str(info.value)


def test_defaults_and_size_from_the_init_image():
    req = _checked(init_image=_image((200, 130)))
    assert (req.width, req.height) == (200, 128)  # to the family's multiple of 8
    assert req.denoising_strength == 0.75 and req.resize_mode == 0 and req.mask_blur == 4
    assert req.inpainting_fill == 1 and not req.inpaint_full_res and req.inpaint_full_res_padding == 32
    assert req.to_dict()["init_image"] == {"width": 200, "height": 130}


def test_capability_from_the_request():
    assert GenerationRequest().capability_name == "txt2img"
    assert GenerationRequest(init_image=_image()).capability_name == "img2img"
    assert GenerationRequest(init_image=_image(), mask=_mask()).capability_name == "inpaint"


@pytest.mark.parametrize("fields, capability", [
    (dict(init_image=_image()), "img2img"), (dict(init_image=_image(), mask=_mask()), "inpaint")])
def test_edge_package_refuses_image_input(tmp_path, fields, capability):
    entry = ModelEntry(name="edge/tiny", path=tmp_path, format=ModelFormat.EDGE, family=SD, source="edge")
    preparer = Preparer(presets=None, styles_file=Path(tmp_path / "styles.csv"), loras=list, lora_roots=list,
                        taesd_available=lambda f: False, taesd_missing=lambda f: "", extensions=None)
    with pytest.raises(UnsupportedCapability) as info:
        preparer.prepare(GenerationRequest(**fields), entry)
    assert info.value.capability == capability and Capability(capability)


# -- 2. masks (PIL only) ------------------------------------------------------------------------------------
def test_resize_modes_give_the_size():
    from modules.generation.masks import resize_image
    src = _image((100, 50))
    for mode in (0, 1, 2):
        assert resize_image(src, 64, 64, mode).size == (64, 64)


def test_crop_region_pads_and_keeps_the_aspect_ratio():
    from modules.generation.masks import crop_region
    box = crop_region(_mask((256, 256), (100, 100, 120, 140)), 8, 64, 64)
    x1, y1, x2, y2 = box
    assert x1 <= 92 and y1 <= 92 and x2 >= 128 and y2 >= 148 and x2 - x1 == y2 - y1


# -- 3. the engine on tiny models -------------------------------------------------------------------------
TINY = dict(width=64, height=64, steps=4, save=False)


@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    from modules.engine import Engine
    from modules.settings import Settings
    from modules.tiny import make_tiny_model
    for family in (Family.SD15, Family.SDXL, Family.ZIMAGE):
        tiny_models(family, "diffusers")
    for family in (Family.SD15, Family.SDXL):  # dedicated inpainting models (9-channel U-Nets), both formats
        for fmt in ("diffusers", "single-file"):
            make_tiny_model(family, fmt, tiny_folders.checkpoints / f"tiny-{family.value}-inpainting-{fmt}",
                            inpainting=True)
    out = tmp_path_factory.mktemp("outputs")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=out, cache_dir=tiny_folders.cache,
                          hf_cache=tiny_folders.cache / "no-hf-cache", ckpt_cache=2))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def _photo(size=(64, 64)):
    """A smooth, textured test picture (the tiny VAE round-trips it loosely)."""
    import numpy as np
    y, x = np.mgrid[0:size[1], 0:size[0]]
    rgb = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) * 127 // sum(size) + 64], -1)
    return Image.fromarray(rgb.astype("uint8"))


def _diff(a, b):
    import numpy as np
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean())


def _gen(engine, **fields):
    return engine.generate(GenerationRequest(**{**TINY, **fields})).wait(120)


@pytest.mark.parametrize("family", [Family.SD15, Family.SDXL])
def test_denoise_zero_returns_the_vae_round_trip(engine, family):
    from modules.generation.img2img import vae_round_trip
    model = f"tiny-{family.value}-diffusers-0"
    photo = _photo()
    zero = _gen(engine, model=model, init_image=photo, denoising_strength=0.0, seed=1)
    some = _gen(engine, model=model, init_image=photo, denoising_strength=0.9, seed=1)
    loaded = engine.manager.current
    trip = vae_round_trip(loaded.backend.pipe, photo, engine.manager.device)
    assert _diff(trip, zero.images[0]) == 0.0  # no step ran: the VAE round trip, nothing else
    assert _diff(photo, some.images[0]) > _diff(photo, zero.images[0]) or _diff(some.images[0], zero.images[0]) > 1
    assert "Denoising strength: 0.9" in some.infotexts[0]


@pytest.mark.parametrize("family", [Family.SD15, Family.SDXL])
@pytest.mark.parametrize("fill", [0, 1])
def test_inpaint_keeps_pixels_outside_the_mask(engine, family, fill):
    import numpy as np
    from modules.generation.masks import prepare_mask
    photo, mask = _photo(), _mask()
    out = _gen(engine, model=f"tiny-{family.value}-diffusers-0", init_image=photo, mask=mask, seed=3,
               denoising_strength=1.0, inpainting_fill=fill).images[0]
    blurred = np.asarray(prepare_mask(mask, blur=4, invert=False))
    outside = blurred == 0
    assert outside.sum() > 1000
    assert (np.asarray(out)[outside] == np.asarray(photo)[outside]).all()
    assert (np.asarray(out)[~outside] != np.asarray(photo)[~outside]).any()


def test_only_masked_touches_only_the_padded_crop(engine):
    from modules.generation.masks import changed_box, crop_region, prepare_mask
    photo, mask = _photo((160, 128)), _mask((160, 128), (100, 20, 120, 44))
    result = _gen(engine, model="tiny-sd15-diffusers-0", init_image=photo, mask=mask, inpaint_full_res=True,
                  inpaint_full_res_padding=8, denoising_strength=1.0, seed=5)
    out = result.images[0]
    assert out.size == photo.size  # the canvas is the full-resolution input
    box = crop_region(prepare_mask(mask, blur=4, invert=False), 8, 64, 64)
    changed = changed_box(photo, out)
    assert changed is not None
    assert box[0] <= changed[0] and box[1] <= changed[1] and changed[2] <= box[2] and changed[3] <= box[3]
    assert "Inpaint area: Only masked" in result.infotexts[0] and "Mask blur: 4" in result.infotexts[0]


def test_mask_of_another_size_is_refused_before_queueing(engine, tmp_path):
    before = set(Path(engine.settings.outputs_dir).rglob("*"))
    with pytest.raises(InvalidRequest) as info:
        engine.prepare(GenerationRequest(model="tiny-sd15-diffusers-0", init_image=_photo(), mask=_mask((32, 32)),
                                         **TINY))
    assert info.value.field == "mask"
    assert set(Path(engine.settings.outputs_dir).rglob("*")) == before


def _rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def test_switching_capabilities_adds_no_resident_copy(engine):
    import gc
    model = "tiny-sd15-diffusers-0"
    _gen(engine, model=model, prompt="warm")
    pipe = engine.manager.current.backend.pipe
    ptrs = {n: p.data_ptr() for n, p in pipe.unet.named_parameters()}
    ids = {name: id(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    gc.collect()
    rss0 = _rss_mb()
    for _ in range(3):
        _gen(engine, model=model, init_image=_photo(), denoising_strength=0.5)
        _gen(engine, model=model, init_image=_photo(), mask=_mask(), denoising_strength=0.5)
        _gen(engine, model=model)
    gc.collect()
    rss1 = _rss_mb()
    print(f"RSS txt2img->img2img->inpaint x3: {rss0:.1f} MB -> {rss1:.1f} MB ({rss1 - rss0:+.1f} MB)")
    assert engine.manager.current.backend.pipe is pipe
    assert {n: p.data_ptr() for n, p in pipe.unet.named_parameters()} == ptrs
    assert {name: id(getattr(pipe, name)) for name in ids} == ids
    from modules.generation.img2img import derived_pipe
    for inpaint in (False, True):
        derived = derived_pipe(pipe, Family.SD15, inpaint=inpaint)
        assert all(getattr(derived, n) is getattr(pipe, n) for n in ids)
    assert rss1 - rss0 < 150


# -- 4. the APIs (in process) -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(engine):
    from api_fixtures import make_client
    return make_client(engine, engine.settings)


def _b64(image) -> str:
    import base64
    import io
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _unb64(text: str):
    import base64
    import io
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


A1111 = dict(steps=2, width=64, height=64, sampler_name="Euler a", seed=11,
             override_settings={"sd_model_checkpoint": "tiny-sd15-diffusers-0"})


def test_sdapi_img2img_and_inpaint_round_trip(client):
    import json

    import numpy as np

    from modules.generation.masks import prepare_mask
    photo = _photo()
    r = client.post("/sdapi/v1/img2img", json={**A1111, "init_images": [_b64(photo)], "denoising_strength": 0.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert _unb64(body["images"][0]).size == (64, 64)
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5 and "init_images" not in body["parameters"]
    r = client.post("/sdapi/v1/img2img", json={**A1111, "init_images": [_b64(photo)], "mask": _b64(_mask()),
                                               "denoising_strength": 1.0, "inpainting_fill": 1,
                                               "inpaint_full_res": False})
    assert r.status_code == 200, r.text
    out = np.asarray(_unb64(r.json()["images"][0]))
    outside = np.asarray(prepare_mask(_mask(), blur=4, invert=False)) == 0
    assert (out[outside] == np.asarray(photo)[outside]).all()
    assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True


@pytest.mark.parametrize("extra, field", [
    (dict(mask="MASK32"), "mask"), (dict(init_images=["bm90IGFuIGltYWdl"]), "init_images.0"),
    (dict(init_images=["BOMB"]), "init_images.0")])
def test_sdapi_bad_uploads_are_422_and_write_nothing(client, engine, extra, field):
    before = set(Path(engine.settings.outputs_dir).rglob("*"))
    bomb = Image.new("L", (8000, 7000))  # 56 megapixels of nothing: a few kB of PNG
    swap = {"MASK32": _b64(_mask((32, 32))), "BOMB": _b64(bomb)}
    extra = {k: ([swap.get(x, x) for x in v] if isinstance(v, list) else swap.get(v, v)) for k, v in extra.items()}
    r = client.post("/sdapi/v1/img2img", json={**A1111, "init_images": [_b64(_photo())], "save_images": True,
                                               **extra})
    assert r.status_code == 422, r.text
    assert field in r.text
    assert set(Path(engine.settings.outputs_dir).rglob("*")) == before


def test_native_img2img(client):
    r = client.post("/api/v1/img2img", json={"model": "tiny-sd15-diffusers-0", "steps": 2, "width": 64,
                                             "height": 64, "seed": 2, "init_image": _b64(_photo()),
                                             "mask": _b64(_mask()), "denoising_strength": 0.8, "save": False})
    assert r.status_code == 200, r.text
    assert "Denoising strength: 0.8" in r.json()["infotexts"][0] and "Mask blur: 4" in r.json()["infotexts"][0]


# -- 5. dedicated inpainting models (9-channel U-Nets) ------------------------------------------------------
INPAINTING_MODELS = [(f, fmt) for f in (Family.SD15, Family.SDXL) for fmt in ("diffusers", "single-file")]


def _unet_in_channels(engine):
    """Input channels of every U-Net call from now on (a forward pre-hook on the loaded U-Net)."""
    seen: list[int] = []
    unet = engine.manager.current.backend.pipe.unet
    handle = unet.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        int((args[0] if args else kwargs["sample"]).shape[1])), with_kwargs=True)
    return seen, handle


@pytest.mark.parametrize("family, fmt", INPAINTING_MODELS, ids=[f"{f.value}-{m}" for f, m in INPAINTING_MODELS])
def test_inpainting_model_is_identified_loaded_and_used(engine, family, fmt):
    import numpy as np
    from modules.generation.masks import prepare_mask
    name = f"tiny-{family.value}-inpainting-{fmt}"
    entry = engine.registry.get(name)
    assert entry.supported and entry.family is family and entry.details["inpainting"] is True, entry
    photo, mask = _photo(), _mask()
    _gen(engine, model=name, init_image=photo, mask=mask, steps=1, denoising_strength=1.0)  # load it
    backend = engine.manager.current.backend
    assert backend.inpaint_model and backend.pipe.unet.config.in_channels == 9
    assert type(backend.pipe).__name__ == {Family.SD15: "StableDiffusionInpaintPipeline",
                                           Family.SDXL: "StableDiffusionXLInpaintPipeline"}[family]
    seen, handle = _unet_in_channels(engine)
    try:
        # inpaint: its own pipeline, the 9-channel conditioning (latents + mask + masked-image latents)
        out = _gen(engine, model=name, init_image=photo, mask=mask, seed=3, denoising_strength=1.0).images[0]
        outside = np.asarray(prepare_mask(mask, blur=4, invert=False)) == 0
        assert (np.asarray(out)[outside] == np.asarray(photo)[outside]).all()
        assert (np.asarray(out)[~outside] != np.asarray(photo)[~outside]).any()
        # txt2img and img2img go through the inpaint pipeline too, the whole picture masked (as A1111)
        txt = _gen(engine, model=name, seed=4).images[0]
        img = _gen(engine, model=name, init_image=photo, denoising_strength=0.5, seed=4).images[0]
    finally:
        handle.remove()
    assert txt.size == img.size == (64, 64) and _diff(txt, img) > 0
    assert seen and set(seen) == {9}, seen


@pytest.mark.parametrize("family", [Family.SD15, Family.ZIMAGE])
def test_latent_noise_and_latent_nothing_fill_the_masked_latents(engine, family):
    """Masked content 2 / 3 (A1111): the masked area of the initial latents is noise / zeros, so the result
    differs from "original" inside the mask; outside it, all three are the input, exactly."""
    import numpy as np
    from modules.generation.masks import prepare_mask
    photo, mask = _photo(), _mask()
    outs = {fill: np.asarray(_gen(engine, model=f"tiny-{family.value}-diffusers-0", init_image=photo, mask=mask,
                                  seed=7, denoising_strength=0.5, inpainting_fill=fill).images[0], dtype=float)
            for fill in (1, 2, 3)}
    outside = np.asarray(prepare_mask(mask, blur=4, invert=False)) == 0
    inside = np.asarray(mask) == 255
    for fill, out in outs.items():
        assert (out[outside] == np.asarray(photo, dtype=float)[outside]).all(), fill
    original = outs[1][inside]
    for fill in (2, 3):
        assert np.abs(outs[fill][inside] - original).mean() > 1.0, fill
    assert np.abs(outs[2][inside] - outs[3][inside]).mean() > 1.0


def test_latent_fill_changes_only_the_masked_latents():
    import torch
    from modules.generation.img2img import fill_masked_latents
    from modules.generation.samplers import make_scheduler
    from modules.tiny.components import SD_SCHEDULER
    from diffusers import EulerDiscreteScheduler
    sched = make_scheduler("Euler", EulerDiscreteScheduler(**SD_SCHEDULER).config)
    sched.set_timesteps(4)
    t = sched.timesteps[:1]
    original, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    plain = sched.add_noise(original, noise, t)
    fill_masked_latents(sched, _mask((64, 64), (0, 0, 32, 64)), 3)  # left half masked, "latent nothing"
    filled = sched.add_noise(original, noise, t)
    assert torch.equal(filled[..., 4:], plain[..., 4:])
    assert not torch.allclose(filled[..., :4], plain[..., :4])


def test_zimage_img2img_and_inpaint(engine):
    import numpy as np
    from modules.generation.img2img import vae_round_trip
    from modules.generation.masks import prepare_mask
    model, photo, mask = "tiny-zimage-diffusers-0", _photo(), _mask()
    zero = _gen(engine, model=model, init_image=photo, denoising_strength=0.0, seed=1).images[0]
    some = _gen(engine, model=model, init_image=photo, denoising_strength=0.8, seed=1).images[0]
    trip = vae_round_trip(engine.manager.current.backend.pipe, photo, engine.manager.device)
    assert _diff(trip, zero) == 0.0 and _diff(some, zero) > 0
    out = _gen(engine, model=model, init_image=photo, mask=mask, seed=2, denoising_strength=1.0).images[0]
    outside = np.asarray(prepare_mask(mask, blur=4, invert=False)) == 0
    assert (np.asarray(out)[outside] == np.asarray(photo)[outside]).all()
    assert (np.asarray(out)[~outside] != np.asarray(photo)[~outside]).any()
