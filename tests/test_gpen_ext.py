"""The gpen extension's edges: loading (torch-free), the CLI, POST /api/v1/restore-faces, the txt2img
post-processor (infotext) and the page tab's handler. The GPEN model is the 256 variant with random
weights in the released layout; pictures without faces are used where no face is needed."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.extensions import load_extensions
from modules.generation.params import GenerationRequest
from modules.jobs import JobQueue
from modules.settings import Settings
from test_gpen_arch import random_models_folder

EXTENSIONS = REPO_ROOT / "extensions"
MISSING = "models/GPEN/GPEN-BFR-512.pth"


@pytest.fixture(scope="module")
def gpen_models(tmp_path_factory):
    return random_models_folder(tmp_path_factory.mktemp("gpen-ext-models"), seed=5)


def _extensions(models_dir, tmp_path, options=None):
    config = tmp_path / "extensions.json"
    config.write_text(json.dumps({"options": {"gpen": options or {}}}))
    ext = load_extensions(EXTENSIONS, settings_file=config, models_dir=models_dir, outputs_dir=tmp_path / "out")
    assert "gpen" in ext.loaded, ext.failed
    return ext


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _noise(w, h, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _face_photo(shared_root=REPO_ROOT.parent / "shared" / "assets" / "images" / "astronaut.png"):
    """The astronaut portrait when the shared assets are here, else a picture without faces."""
    return (Image.open(shared_root).convert("RGB"), 1) if shared_root.is_file() else (_noise(256, 256), 0)


# -- loading -------------------------------------------------------------------------------------------
def test_loads_without_importing_torch_or_gradio(tmp_path):
    code = ("import sys, json; from pathlib import Path; from modules.extensions import load_extensions; "
            f"e = load_extensions(Path({str(EXTENSIONS)!r}), models_dir=Path({str(tmp_path)!r}), "
            f"outputs_dir=Path({str(tmp_path)!r})); "
            "print(json.dumps([e.summary(), 'torch' in sys.modules, 'gradio' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    summary, torch_loaded, gradio_loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    gpen = next(s for s in summary if s["name"] == "gpen")
    assert gpen["state"] == "loaded" and gpen["warnings"] == []
    assert gpen["postprocessors"] == ["gpen"] and gpen["tabs"] == ["restore-faces"]
    assert gpen["routes"] == ["/api/v1/restore-faces"] and gpen["cli_commands"] == ["restore-faces"]
    assert not torch_loaded and not gradio_loaded


def test_face_restore_kind_is_gpen(tmp_path):
    ext = _extensions(tmp_path, tmp_path)
    pp = ext.face_restorer()
    assert pp is not None and pp.id == "gpen" and pp.label("en") == "Restore faces (GPEN)"
    assert pp.label("zh") == "面部修复 (GPEN)"


# -- CLI -----------------------------------------------------------------------------------------------
def test_cli_missing_weights_is_one_message(tmp_path, capsys):
    from modules.cli import main
    src = tmp_path / "in.png"
    _noise(64, 64).save(src)
    code = main(["restore-faces", "-i", str(src), "-o", str(tmp_path / "out.png"),
                 "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and MISSING in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_cli_restores_a_folder_with_progress(gpen_models, tmp_path, capsys):
    from modules.cli import main
    src = tmp_path / "photos"
    src.mkdir()
    face, n_faces = _face_photo()
    face.save(src / "a.png")
    _noise(80, 60).save(src / "b.jpg")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "restored"
    code = main(["restore-faces", "-i", str(src), "-o", str(out), "--model", "GPEN-BFR-256",
                 "--models-dir", str(gpen_models)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert Image.open(out / "a.png").size == face.size and Image.open(out / "b.png").size == (80, 60)
    assert "[1/2] a.png" in captured.err and "[2/2] b.jpg" in captured.err
    assert f"{n_faces} face(s)" in captured.err
    assert captured.out.split() == [str(out / "a.png"), str(out / "b.png")]


# -- HTTP API ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_client(gpen_models, tmp_path_factory):
    from fastapi.testclient import TestClient

    from modules.api import build_api
    from modules.engine import Engine

    root = tmp_path_factory.mktemp("gpen-api")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=root / "models", outputs_dir=root / "outputs", cache_dir=root / "cache",
                        hf_cache=root / "no-hf", config_file=root / "config.json", embed_cache_persist=False,
                        warm_presets=False)
    ext = _extensions(gpen_models, root)
    engine = Engine(settings, ext)
    engine.start(load_initial=False)
    with TestClient(build_api(engine, settings)) as client:
        yield client
    engine.close()


def test_api_missing_weights_is_a_clear_404(api_client):
    r = api_client.post("/api/v1/restore-faces", json={"image": _png_b64(_noise(32, 32)), "model": "GPEN-BFR-512"})
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "missing_component" and MISSING in body["message"]


def test_api_restores_faces(api_client):
    face, n_faces = _face_photo()
    r = api_client.post("/api/v1/restore-faces", json={"image": _png_b64(face), "model": "GPEN-BFR-256"})
    assert r.status_code == 200, r.text
    body = r.json()
    out = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert out.format == "PNG" and out.size == face.size
    assert body["faces_found"] == n_faces == len(body["faces"])
    assert body["model"] == "GPEN-BFR-256" and body["device"] == "cpu" and body["dtype"] == "fp32"
    if n_faces:
        assert not np.array_equal(np.array(out.convert("RGB")), np.array(face))


def test_api_accepts_photos_over_the_json_body_limit(api_client):
    big = _noise(900, 900)  # ~2.4 MB as PNG: over the 1 MiB limit of ordinary JSON requests
    r = api_client.post("/api/v1/restore-faces", json={"image": _png_b64(big), "model": "GPEN-BFR-256"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["faces_found"] == 0


@pytest.mark.parametrize("body, field", [
    ({"image": "not base64!!"}, "image"),
    ({"image": base64.b64encode(b"not an image").decode()}, "image"),
    ({"image": "", "model": "GPEN-BFR-256", "tile": 10}, "tile"),
    ({"image": "aGk=", "model": "GPEN-BFR-7"}, "model"),
])
def test_api_bad_requests_are_422(api_client, body, field):
    body = {"model": "GPEN-BFR-256", **body}
    r = api_client.post("/api/v1/restore-faces", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


# -- txt2img post-processor ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_with_gpen(tiny_folders, tiny_models, gpen_models, tmp_path_factory):  # noqa: F811
    from modules.engine import Engine

    tiny_models("sd15", "single-file")
    root = tmp_path_factory.mktemp("gpen-engine")
    ext = _extensions(gpen_models, root, options={"model": "GPEN-BFR-256"})
    engine = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=root / "outputs",
                             cache_dir=tiny_folders.cache, hf_cache=tiny_folders.cache / "no-hf-cache",
                             embed_cache_persist=False, warm_presets=False), ext)
    engine.start(load_initial=False)
    yield engine
    engine.close()


def test_txt2img_postprocessor_records_face_restoration(engine_with_gpen):
    req = GenerationRequest(model="tiny-sd15-single-file-0", prompt="a portrait", width=64, height=64, steps=2,
                            seed=7, postprocess=["gpen"], save=False)
    result = engine_with_gpen.generate(req).wait(300)
    assert "Face restoration: GPEN-BFR-256" in result.infotexts[0]
    assert not any("failed" in n for n in result.notes)


def test_postprocessor_without_weights_keeps_the_image_and_says_why(tmp_path):
    from modules.extensions.postprocess import run_postprocessors

    ext = _extensions(tmp_path / "empty-models", tmp_path)
    image = _noise(64, 64)
    out = run_postprocessors([image], [1], None, ext.resolve_postprocess(["gpen"]), report=lambda *a: None,
                             check_cancelled=lambda: None, options_for=ext.options, device="cpu")
    assert out.images[0] is image and out.infotexts == [{}]
    assert len(out.notes) == 1 and MISSING in out.notes[0]


# -- page tab ------------------------------------------------------------------------------------------
def test_tab_handler_runs_on_the_job_queue(gpen_models, tmp_path):
    import gradio as gr

    ext = _extensions(gpen_models, tmp_path)
    tab_mod = sys.modules["visage_ext_gpen.tab"]
    restore_mod = sys.modules["visage_ext_gpen.restore"]
    queue = JobQueue(max_pending=4)
    queue.start()
    try:
        restorer = restore_mod.FaceRestorer(gpen_models)
        handler = tab_mod.make_restore(restorer, restore_mod.RestoreOptions(), queue.submit, "en",
                                       errors=lambda exc: gr.Error(str(exc)), poll_s=0.05)
        face, n_faces = _face_photo()
        outputs = list(handler(face, "GPEN-BFR-256", 1024, 0, 1, 1.0, False))
        text, image = outputs[-1]
        assert image.size == face.size and f"{n_faces} face(s) restored with GPEN-BFR-256" in text
        with pytest.raises(gr.Error, match="GPEN-BFR-512.pth"):
            list(handler(face, "GPEN-BFR-512", 1024, 0, 1, 1.0, False))
        zh = tab_mod.make_restore(restorer, restore_mod.RestoreOptions(), queue.submit, "zh",
                                  errors=lambda exc: gr.Error(str(exc)), poll_s=0.05)
        with pytest.raises(gr.Error, match="请先上传照片"):
            list(zh(None))
    finally:
        queue.stop()
    assert ext.tabs[0].title("zh") == "面部修复"


def test_tab_builds_inside_a_page(gpen_models, tmp_path):
    import gradio as gr

    from modules.extensions import TabContext

    ext = _extensions(gpen_models, tmp_path)
    tab = ext.tabs[0]
    ctx = TabContext(engine=None, t=lambda key, **kw: key, lang="en", submit=lambda kind, fn: None,
                     extension="gpen")
    with gr.Blocks() as demo:
        with gr.Tab(tab.title("en")):
            tab.build(ctx)
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert {"Photo", "Restored", "Model", "Strength"} <= labels
