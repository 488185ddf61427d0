"""The face detailer (modules/faces/detailer.py) on real photos with the real MTCNN weights and a tiny SD1.5
model: only face regions change (pixels where the blurred face mask is 0, so all outside the padded face
boxes, are the input's), no face -> unchanged + a note, ``[SEP]`` prompts map to faces left to right, and
/sdapi/v1/txt2img|img2img with ADetailer's ``alwayson_scripts`` run it and record it in the infotext.
Each check is also run against a deliberately broken path (``broken=True``) and must fail there."""
from __future__ import annotations

import base64
import io
import json
from functools import partial

import numpy as np
import pytest
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from PIL import Image
from test_faces import detector, mtcnn_models, mtcnn_wheel  # noqa: F401 - pytest fixtures

from modules.errors import InvalidRequest, MissingComponent
from modules.faces import detailer as DT
from modules.families import Family
from modules.generation.masks import changed_box, crop_region
from modules.generation.params import GenerationRequest

MODEL = "tiny-sd15-diffusers-0"
RES = 128  # the crop size in tests (512 by default)


@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, mtcnn_models, tmp_path_factory):  # noqa: F811
    from modules.engine import Engine
    from modules.settings import Settings
    tiny_models(Family.SD15, "diffusers")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=tmp_path_factory.mktemp("outputs"),
                          cache_dir=tiny_folders.cache, hf_cache=tiny_folders.cache / "no-hf-cache"))
    eng.runner.models_dir = lambda: mtcnn_models  # MTCNN's weights live in another models/ folder here
    eng.start(load_initial=False)
    eng.switch_model(MODEL).wait(120)  # the page generates with the selected model
    eng.generate(eng.prepare(GenerationRequest(model=MODEL, steps=1, width=64, height=64, save=False))).wait(120)
    yield eng
    eng.close()


class Ctx:
    """A job context stand-in for calling the backend directly."""
    cancelled = False

    class progress:
        total = 0

    def report(self, *a, **k):
        pass

    def check_cancelled(self):
        pass


def _photo(shared_assets, name):
    return Image.open(shared_assets / "images" / name).convert("RGB")


def _req(**fields):
    req = GenerationRequest(**{"prompt": "a portrait photo", "steps": 4, "seed": 7, "save": False, **fields})
    return req.with_defaults(Family.SD15)


def _inpaint(engine, calls=None):
    backend = engine.manager.current.backend
    run = partial(backend.inpaint, ctx=Ctx(), encode=None, tae=None)

    def inpaint(sub):
        if calls is not None:
            calls.append(sub)
        return run(sub)
    return inpaint


def _masks(image, faces, s):
    return [DT.face_mask(image.size, f.box, s.dilation, s.blur) for f in faces]


def outside_problems(before, after, masks, crops) -> list[str]:
    a, b = np.asarray(before.convert("RGB")), np.asarray(after.convert("RGB"))
    problems = []
    zero = np.ones(a.shape[:2], bool)
    for m in masks:
        zero &= np.asarray(m) == 0
    if not (a[zero] == b[zero]).all():
        problems.append(f"{int((a[zero] != b[zero]).any(-1).sum())} px changed where every face mask is 0")
    outside = np.ones(a.shape[:2], bool)
    for x0, y0, x1, y1 in crops:
        outside[y0:y1, x0:x1] = False
    if not (a[outside] == b[outside]).all():
        problems.append("pixels changed outside the padded face boxes")
    if (a[~zero] == b[~zero]).all():
        problems.append("nothing changed inside the faces")
    return problems


def _broken_paste(image, output, crop, mask):
    """Broken path: the crop pasted as a rectangle (the blurred-mask composite skipped)."""
    image = image.copy()
    image.paste(output.convert("RGB").resize((crop[2] - crop[0], crop[3] - crop[1]), Image.LANCZOS), crop[:2])
    return image


# -- settings and prompts (no model) ------------------------------------------------------------------------
def test_sep_prompts_and_checks():
    assert DT.face_prompts("", "main", 2) == ["main", "main"]
    assert DT.face_prompts("a [SEP] b", "main", 3) == ["a", "b", "b"]
    assert DT.face_prompts(" [SEP] [PROMPT], smile", "main", 2) == ["main", "main, smile"]
    req = _req(detailer=DT.DetailerSettings(denoise=0.0))
    with pytest.raises(InvalidRequest) as info:
        req.check_inputs(Family.SD15)
    assert info.value.field == "detailer.denoise"
    with pytest.raises(InvalidRequest) as info:
        _req(detailer=DT.DetailerSettings(resolution=500)).check_inputs(Family.SD15)
    assert info.value.field == "detailer.resolution"
    _req(detailer=DT.DetailerSettings()).check_inputs(Family.SD15)


def test_missing_weights_name_the_fetch_command(tmp_path):
    with pytest.raises(MissingComponent) as info:
        DT.load_detector(tmp_path)
    assert "fetch-face-detector" in str(info.value)


# -- the detailer on the real photo ------------------------------------------------------------------------
@pytest.mark.parametrize("broken", [False, True])
def test_only_face_regions_change(engine, detector, shared_assets, monkeypatch, broken):  # noqa: F811
    photo = _photo(shared_assets, "astronaut.png")
    s = DT.DetailerSettings(denoise=0.6, resolution=RES)
    if broken:
        monkeypatch.setattr(DT, "paste_face", _broken_paste)
    out, faces = DT.detail_image(photo, 7, _req(), s, detect=detector.detect, inpaint=_inpaint(engine))
    assert len(faces) == 1 and out.size == photo.size
    kept = DT.select_faces(detector.detect(np.asarray(photo)), s.confidence)
    problems = outside_problems(photo, out, _masks(photo, kept, s), [f.crop for f in faces])
    assert bool(problems) == broken, problems
    if broken:
        assert "where every face mask is 0" in problems[0]


@pytest.mark.parametrize("broken", [False, True])
def test_no_face_leaves_the_image_and_says_so(engine, detector, monkeypatch, broken):  # noqa: F811
    y, x = np.mgrid[0:256, 0:256]
    plain = Image.fromarray(np.stack([x, y, (x + y) // 2], -1).astype("uint8"))
    detect = detector.detect
    if broken:  # broken path: the confidence threshold not applied (a low-score box is detailed anyway)
        monkeypatch.setattr(DT, "select_faces", lambda faces, c, k=0: faces)
        detect = lambda rgb: [DT.DetailedFace((96, 96, 160, 160), 0.01, (0, 0, 0, 0), "")]
    req = _req(detailer=DT.DetailerSettings(resolution=RES))
    images, notes, found = DT.run_detailer([plain], [1], req, detect=detect, inpaint=_inpaint(engine))
    unchanged = changed_box(plain, images[0]) is None and not found[0]
    assert unchanged != broken
    assert bool(notes and notes[0].key == "note.detailer_no_face") != broken


@pytest.mark.parametrize("broken", [False, True])
def test_sep_prompts_map_to_faces_left_to_right(engine, detector, shared_assets, monkeypatch, broken):  # noqa: F811
    photo = _photo(shared_assets, "Solvay_conference_1927.png")
    s = DT.DetailerSettings(prompt="first face [SEP] second face [SEP] third face", max_faces=3, resolution=64,
                            padding=8)
    if broken:  # broken path: faces taken in detector (score) order, not left to right
        monkeypatch.setattr(DT, "select_faces", lambda faces, c, k=0: sorted(
            [f for f in faces if f.score >= c], key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))[:k])
    calls = []
    _out, faces = DT.detail_image(photo, 3, _req(steps=2), s, detect=detector.detect,
                                 inpaint=_inpaint(engine, calls))
    assert len(faces) == 3
    xs = [f.box[0] for f in faces]
    ok = xs == sorted(xs) and [c.prompt for c in calls] == ["first face", "second face", "third face"]
    assert ok != broken
    assert all(c.width == c.height == 64 and c.mask is not None for c in calls)


# -- the engine and the APIs ------------------------------------------------------------------------------
def _b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _unb64(text):
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


@pytest.fixture(scope="module")
def client(engine):
    from api_fixtures import make_client

    from modules.api.models import ApiLimits
    return make_client(engine, engine.settings, ApiLimits(max_side=512, max_steps=4, max_batch_size=1,
                                                          max_batch_count=1))


ADETAILER = {"ADetailer": {"args": [True, False, {
    "ad_model": "face_yolov8n.pt", "ad_prompt": "", "ad_denoising_strength": 0.5, "ad_confidence": 0.3,
    "ad_mask_blur": 4, "ad_dilate_erode": 4, "ad_inpaint_only_masked_padding": 32,
    "ad_use_inpaint_width_height": True, "ad_inpaint_width": RES, "ad_inpaint_height": RES,
    "ad_sampler": "DPM++ 2M", "ad_controlnet_model": "None"}]}}
BODY = dict(prompt="portrait", steps=4, width=64, height=64, sampler_name="Euler a", seed=5,
            override_settings={"sd_model_checkpoint": MODEL})


@pytest.mark.parametrize("broken", [False, True])
def test_sdapi_txt2img_with_adetailer_records_it(client, monkeypatch, broken):
    if broken:  # broken path: the alwayson_scripts entry not mapped
        monkeypatch.setattr("modules.api.sdapi.detailer_from_scripts", lambda *a, **k: None)
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": ADETAILER})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    text = info["infotexts"][0]
    recorded = all(k in text for k in ("ADetailer model: mtcnn", "ADetailer confidence: 0.3",
                                       "ADetailer dilate erode: 4", "ADetailer mask blur: 4",
                                       "ADetailer denoising strength: 0.5", "ADetailer inpaint padding: 32",
                                       "ADetailer version: Visage"))
    assert recorded != broken, text
    assert "alwayson_scripts" not in info.get("visage_ignored", [])  # ADetailer alone: nothing ignored
    # the tiny model paints no face: the detailer ran and said so
    assert any("no face" in n for n in info.get("visage_notes", [])) != broken


@pytest.mark.parametrize("broken", [False, True])
def test_sdapi_img2img_with_adetailer_details_the_face(client, detector, shared_assets, monkeypatch,  # noqa: F811
                                                      broken):
    photo = _photo(shared_assets, "astronaut.png").resize((256, 256), Image.LANCZOS)
    corner = Image.new("L", photo.size, 0)
    corner.paste(255, (0, 200, 48, 256))  # inpaint a corner (the tiny VAE would blur the face away otherwise)
    body = {**BODY, "width": 256, "height": 256, "init_images": [_b64(photo)], "mask": _b64(corner),
            "denoising_strength": 0.5}
    plain = client.post("/sdapi/v1/img2img", json=body)
    assert plain.status_code == 200, plain.text
    base = _unb64(plain.json()["images"][0])
    if broken:  # broken path: the detailer's paste-back skipped (the crop pasted as a rectangle)
        monkeypatch.setattr(DT, "paste_face", _broken_paste)
    r = client.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": ADETAILER})
    assert r.status_code == 200, r.text
    out = _unb64(r.json()["images"][0])
    info = json.loads(r.json()["info"])
    assert "ADetailer model: mtcnn" in info["infotexts"][0] and "ADetailer inpaint width: 128" in info["infotexts"][0]
    s = DT.DetailerSettings(resolution=RES)
    faces = DT.select_faces(detector.detect(np.asarray(base)), s.confidence)
    assert len(faces) == 1
    masks = _masks(base, faces, s)
    crops = [crop_region(m, s.padding, RES, RES) for m in masks]
    problems = outside_problems(base, out, masks, crops)
    assert bool(problems) == broken, problems


def test_native_generate_takes_a_detailer_object(client):
    r = client.post("/api/v1/generate", json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "save": False,
                                              "model": MODEL, "detailer": {"denoise": 0.5, "resolution": 64}})
    assert r.status_code == 200, r.text
    assert "ADetailer model: mtcnn" in r.json()["infotexts"][0]
    bad = client.post("/api/v1/generate", json={"prompt": "x", "model": MODEL, "detailer": {"denoise": 0}})
    assert bad.status_code == 422 and "detailer.denoise" in bad.text


def test_img2img_tab_face_detailer_accordion(engine):
    import gradio as gr

    from modules.ui import img2img
    from modules.ui.i18n import Translator
    t = Translator("en", strict=True)
    with gr.Blocks():
        tab = img2img.build(engine, t, img2img.IMG2IMG)
    labels = [getattr(c, "label", None) for c in tab.inputs[-4:]]
    assert labels == [t("detailer.enable"), t("detailer.prompt"), t("detailer.denoise"), t("detailer.confidence")]
    photo = Image.new("RGB", (64, 64), (120, 90, 60))
    run = img2img.make_generate(engine, t, img2img.IMG2IMG, poll_s=0.05)
    final = list(run(photo, None, "a face", "", "", "Euler", 2, 7.0, 5, 1, 1, 0.3, 0, True, "", 0.5, 0.3))[-1]
    assert "ADetailer model: mtcnn" in final[1] and "ADetailer denoising strength: 0.5" in final[1]
    off = list(run(photo, None, "a face", "", "", "Euler", 2, 7.0, 5, 1, 1, 0.3, 0, False, "", 0.5, 0.3))[-1]
    assert "ADetailer" not in off[1]


def test_edge_package_refuses_the_detailer_before_queueing(tmp_path):
    """An edge package cannot inpaint, so the face detailer is refused up front, naming it."""
    from pathlib import Path

    from modules.engine.prepare import Preparer
    from modules.errors import UnsupportedCapability
    from modules.faces.detailer import DetailerSettings
    from modules.families import Family
    from modules.generation.params import GenerationRequest
    from modules.registry.entry import ModelEntry, ModelFormat

    entry = ModelEntry(name="edge/tiny", path=tmp_path, format=ModelFormat.EDGE, family=Family.SD15, source="edge")
    preparer = Preparer(presets=None, styles_file=Path(tmp_path / "styles.csv"), loras=list, lora_roots=list,
                        taesd_available=lambda f: False, taesd_missing=lambda f: "", extensions=None)
    with pytest.raises(UnsupportedCapability) as info:
        preparer.prepare(GenerationRequest(detailer=DetailerSettings()), entry)
    assert info.value.capability == "face detailer"
