"""Visage's own API in process (FastAPI TestClient) on tiny models: generate, models, LoRAs, presets,
cache stats, switching, validation, the one queue (FIFO with the page, 503 + Retry-After when full),
interrupt, not-ready, HTTP Basic auth, and no torch at import time."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from api_fixtures import SD15, ZIMAGE, make_client, make_settings, private_models, start_engine, wait_until
from conftest import REPO_ROOT
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.api import ApiLimits
from modules.generation.params import GenerationRequest
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters
from test_lora_engine import write_kohya


@pytest.fixture(scope="module")
def env(tiny_folders, tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    folders = private_models(root, tiny_folders, tiny_models)
    (folders.models / "styles.csv").write_text("name,prompt,negative_prompt\n"
                                               "Studio,\"{prompt}, studio light\",\"blurry\"\n", encoding="utf-8")
    settings = make_settings(folders)
    engine = start_engine(settings)
    folders.lora.mkdir(parents=True, exist_ok=True)
    write_kohya(folders.lora / "face_a.safetensors", engine.manager.current.pipe, seed=1)
    client = make_client(engine, settings)
    yield engine, client, folders
    engine.close()


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _infotext(b64: str) -> str:
    return read_png_parameters(base64.b64decode(b64))


SMALL = {"width": 64, "height": 64, "steps": 2}


def test_healthz_reports_ready_model_and_queue(env):
    _engine, client, _folders = env
    h = client.get("/healthz").json()
    assert h["state"] == "ready" and h["ready"] is True
    assert h["model"].startswith(SD15) and h["family"] == "sd15"
    assert h["queue_length"] == 0 and h["max_queue"] == 64


def test_generate_returns_pngs_with_infotext_seeds_and_files(env):
    _engine, client, folders = env
    body = {**SMALL, "prompt": "portrait of a woman, 人像", "negative_prompt": "blurry", "seed": 1234,
            "cfg_scale": 6.5, "sampler": "Euler a", "batch_size": 2, "clip_skip": 2}
    r = client.post("/api/v1/generate", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["seeds"] == [1234, 1235] and len(data["images"]) == 2 and len(data["files"]) == 2
    for image, text, seed, name in zip(data["images"], data["infotexts"], data["seeds"], data["files"]):
        assert _decode(image).size == (64, 64)
        assert _infotext(image) == text
        prompt, negative, params = parse_infotext(text)
        assert prompt == body["prompt"] and negative == "blurry"
        assert params["Seed"] == str(seed) and params["Steps"] == "2" and params["Sampler"] == "Euler a"
        assert params["CFG scale"] == "6.5" and params["Size"] == "64x64" and params["Clip skip"] == "2"
        assert params["Model"] == SD15 and len(params["Model hash"]) == 10
        assert read_png_parameters(folders.outputs / name) == text
    assert data["model"].startswith(SD15)


def test_same_seed_same_image_and_save_false_writes_nothing(env):
    _engine, client, folders = env
    before = set(folders.outputs.rglob("*.png"))
    a = client.post("/api/v1/generate", json={**SMALL, "seed": 9, "save": False}).json()
    b = client.post("/api/v1/generate", json={**SMALL, "seed": 9, "save": False}).json()
    assert _decode(a["images"][0]).tobytes() == _decode(b["images"][0]).tobytes()
    assert a["files"] == [] and set(folders.outputs.rglob("*.png")) == before


def test_preset_styles_and_loras(env):
    _engine, client, _folders = env
    presets = client.get("/api/v1/presets").json()
    assert presets and {"id", "name", "families", "family_params"} <= set(presets[0])
    preset = presets[0]["id"]
    r = client.post("/api/v1/generate", json={**SMALL, "prompt": "a man", "preset": preset, "save": False})
    assert r.status_code == 200, r.text
    assert parse_infotext(r.json()["infotexts"][0])[2]["Preset"] == preset
    r = client.post("/api/v1/generate", json={**SMALL, "prompt": "a man", "styles": ["Studio"], "save": False})
    prompt, negative, params = parse_infotext(r.json()["infotexts"][0])
    assert prompt == "a man, studio light" and negative == "blurry" and params["Styles"] == "Studio"
    loras = client.get("/api/v1/loras").json()
    assert [lora["name"] for lora in loras] == ["face_a"] and loras[0]["family"] == "sd15"
    plain = client.post("/api/v1/generate", json={**SMALL, "seed": 4, "save": False}).json()
    listed = client.post("/api/v1/generate", json={**SMALL, "seed": 4, "save": False,
                                                   "loras": [{"name": "face_a", "weight": 1.0}]}).json()
    tagged = client.post("/api/v1/generate", json={**SMALL, "seed": 4, "save": False,
                                                   "prompt": "<lora:face_a:1>"}).json()
    assert "Lora hashes" in parse_infotext(listed["infotexts"][0])[2]
    assert _decode(listed["images"][0]).tobytes() != _decode(plain["images"][0]).tobytes()
    assert _decode(tagged["images"][0]).tobytes() == _decode(listed["images"][0]).tobytes()
    r = client.post("/api/v1/generate", json={**SMALL, "loras": [{"name": "no-such-lora"}]})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    r = client.post("/api/v1/generate", json={**SMALL, "preset": "no-such-preset"})
    assert r.status_code == 422 and r.json()["field"] == "preset"


@pytest.mark.parametrize("body,field", [
    ({"width": 65}, "width"), ({"width": 4096}, "width"), ({"height": 32}, "height"), ({"steps": 0}, "steps"),
    ({"steps": 500}, "steps"), ({"cfg_scale": 31}, "cfg_scale"), ({"batch_size": 99}, "batch_size"),
    ({"batch_count": 0}, "batch_count"), ({"seed": -2}, "seed"), ({"prompt": "x" * 5000}, "prompt"),
    ({"sampler": "Nope"}, "sampler"), ({"clip_skip": 13}, "clip_skip"), ({"backend": "edge"}, "backend"),
    ({"unknown_field": 1}, "unknown_field"), ({"prompt": "bad \x00 nul"}, "prompt"),
    ({"model": ZIMAGE, "width": 72, "height": 64}, "width"),  # Z-Image needs multiples of 16
])
def test_validation_answers_422_with_field_and_rule(env, body, field):
    _engine, client, _folders = env
    r = client.post("/api/v1/generate", json={**SMALL, **body})
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["error"] == "invalid_request" and data["field"] == field and data["rule"], data
    assert data["message"] == data["detail"] and "Traceback" not in r.text


def test_body_that_is_not_json_is_a_clear_400(env):
    _engine, client, _folders = env
    r = client.post("/api/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"] in ("bad_request", "invalid_request")


def test_models_switch_and_cache_stats(env):
    engine, client, _folders = env
    models = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert models[SD15]["current"] and models[ZIMAGE]["family"] == "zimage"
    r = client.post("/api/v1/models/switch", json={"model": ZIMAGE})
    assert r.status_code == 200 and r.json()["family"] == "zimage" and r.json()["state"] == "ready"
    out = client.post("/api/v1/generate", json={"width": 64, "height": 64, "steps": 2, "seed": 1, "save": False})
    assert out.status_code == 200 and "Sampler: Euler (flow match)" in out.json()["infotexts"][0]
    r = client.post("/api/v1/models/switch", json={"model": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found" and "no-such-model" in r.json()["message"]
    assert client.post("/api/v1/models/switch", json={"model": SD15}).json()["family"] == "sd15"
    stats = client.get("/api/v1/cache/stats").json()
    assert stats["hits"] + stats["misses"] > 0 and 0.0 <= stats["hit_rate"] <= 1.0
    client.post("/api/v1/generate", json={**SMALL, "prompt": "cache me", "save": False})
    again = client.get("/api/v1/cache/stats").json()
    client.post("/api/v1/generate", json={**SMALL, "prompt": "cache me", "save": False})
    assert client.get("/api/v1/cache/stats").json()["hits"] == again["hits"] + 1


def _block_worker(engine):
    """Occupy the worker with a job that waits for the returned event (what a long generation does)."""
    release = threading.Event()
    started = threading.Event()

    def blocker(ctx):
        started.set()
        release.wait(60)
        return "blocker done"

    job = engine.queue.submit("blocker", blocker)
    assert started.wait(30)
    return job, release


def test_one_fifo_queue_with_the_page_and_503_retry_after_when_full(tiny_folders, tiny_models, tmp_path):
    folders = private_models(tmp_path, tiny_folders, tiny_models, wanted=(("sd15", "single-file"),))
    settings = make_settings(folders, max_queue=2)
    engine = start_engine(settings)
    try:
        client = make_client(engine, settings)
        blocker, release = _block_worker(engine)
        page_job = engine.generate(GenerationRequest(prompt="from the page", seed=1, save=False, **SMALL))
        results: dict[str, object] = {}

        def api_call():
            results["api"] = client.post("/api/v1/generate", json={**SMALL, "seed": 2, "save": False})

        t = threading.Thread(target=api_call)
        t.start()
        wait_until(lambda: len(engine.queue) == 3, 30, "the API job to queue")  # blocker + page + API
        full = client.post("/api/v1/generate", json={**SMALL, "seed": 3})
        assert full.status_code == 503 and full.json()["error"] == "queue_full"
        assert int(full.headers["Retry-After"]) >= 1
        sd = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 3})
        assert sd.status_code == 503 and "Retry-After" in sd.headers
        assert client.get("/healthz").json()["queue_length"] == 3
        release.set()
        t.join(60)
        page_result = page_job.wait(60)
        assert results["api"].status_code == 200 and results["api"].json()["seeds"] == [2]
        assert page_result.seeds == [1] and blocker.result == "blocker done"
        # FIFO: the page's job (queued first) finished before the API's
        assert page_job.done_event.is_set()
        assert client.post("/api/v1/generate", json={**SMALL, "seed": 3, "save": False}).status_code == 200
    finally:
        engine.close()


def test_interrupt_stops_the_running_job_for_api_and_page(tiny_folders, tiny_models, tmp_path, monkeypatch):
    from modules.families import Family
    from modules.taesd import random_taesd

    folders = private_models(tmp_path, tiny_folders, tiny_models, wanted=(("sd15", "single-file"),))
    random_taesd(Family.SD15, seed=0).save_pretrained(str(folders.vae_approx / "taesd"))  # live previews
    settings = make_settings(folders)
    engine = start_engine(settings)
    try:
        client = make_client(engine, settings, ApiLimits())
        long_body = {"width": 64, "height": 64, "steps": 150, "seed": 5, "save": False}
        holder: dict[str, object] = {}
        t = threading.Thread(target=lambda: holder.update(r=client.post("/api/v1/generate", json=long_body)))
        t.start()
        wait_until(lambda: client.get("/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1, 60,
                   "sampling to start")
        progress = client.get("/sdapi/v1/progress").json()
        assert progress["state"]["job_count"] == 1 and progress["state"]["sampling_steps"] == 150
        assert 0 < progress["progress"] < 1 and progress["textinfo"] == "denoising"
        assert client.post("/api/v1/interrupt").json() == {"interrupted": True}
        t.join(60)
        r = holder["r"]
        assert r.status_code == 409 and r.json()["error"] == "interrupted"
        # the A1111 endpoint: a live TAESD preview every 10 steps (A1111's default option), and on
        # interrupt 200 with no images, as A1111 does; the page's jobs stop too
        t = threading.Thread(target=lambda: holder.update(r=client.post("/sdapi/v1/txt2img", json=long_body)))
        t.start()
        preview = wait_until(lambda: client.get("/sdapi/v1/progress").json()["current_image"], 60, "a preview")
        image = _decode(preview)  # the tiny VAE's latent grid differs from SD's: only check it is a picture
        assert image.format == "PNG" and image.size[0] == image.size[1] >= 64
        assert client.get("/sdapi/v1/progress?skip_current_image=true").json()["current_image"] is None
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        t.join(60)
        assert holder["r"].status_code == 200 and holder["r"].json()["images"] == []
        page_job = engine.generate(GenerationRequest(prompt="page", **long_body))
        wait_until(lambda: page_job.progress.step >= 1, 60, "the page job to run")
        assert client.post("/api/v1/interrupt").json()["interrupted"] is True
        assert page_job.done_event.wait(60) and page_job.state.value == "interrupted"
        assert client.post("/api/v1/generate", json={**SMALL, "save": False}).status_code == 200
        assert client.post("/api/v1/interrupt").json() == {"interrupted": False}
    finally:
        engine.close()


def test_not_ready_answers_503_with_retry_after(tmp_path):
    from modules.paths import Folders

    folders = Folders(models=tmp_path / "models", outputs=tmp_path / "out", cache=tmp_path / "cache")
    settings = make_settings(folders, model=None)
    engine = start_engine(settings)  # no models at all
    try:
        client = make_client(engine, settings)
        h = client.get("/healthz").json()
        assert h["ready"] is False and h["model"] is None and "no models" in h["message"]
        r = client.post("/api/v1/generate", json=SMALL)
        assert r.status_code == 503 and r.json()["error"] == "not_ready" and int(r.headers["Retry-After"]) >= 1
        assert client.get("/sdapi/v1/sd-models").json() == []
    finally:
        engine.close()


def test_api_auth_protects_every_api_path(env):
    engine, _client, _folders = env
    settings = make_settings(engine.folders, api_auth=(("alice", "s3cret"), ("bob", "hunter2")))
    client = make_client(engine, settings)
    for path in ("/healthz", "/api/v1/models", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/openapi.json",
                 "/docs"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get(path, auth=("alice", "wrong")).status_code == 401
        assert client.get(path, auth=("mallory", "s3cret")).status_code == 401
        assert client.get(path, auth=("alice", "s3cret")).status_code == 200
        assert client.get(path, auth=("bob", "hunter2")).status_code == 200
    r = client.post("/api/v1/generate", json=SMALL)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert client.post("/api/v1/generate", json={**SMALL, "save": False}, auth=("bob", "hunter2")).status_code == 200


def test_openapi_schema_lists_both_apis_and_error_shape(env):
    _engine, client, _folders = env
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/healthz", "/api/v1/generate", "/api/v1/models", "/api/v1/loras", "/api/v1/presets",
            "/api/v1/cache/stats", "/api/v1/models/switch", "/sdapi/v1/txt2img", "/sdapi/v1/sd-models",
            "/sdapi/v1/options", "/sdapi/v1/progress", "/sdapi/v1/png-info", "/sdapi/v1/interrupt",
            "/sdapi/v1/samplers", "/sdapi/v1/loras", "/sdapi/v1/prompt-styles",
            "/sdapi/v1/refresh-checkpoints"} <= paths
    generate = schema["paths"]["/api/v1/generate"]["post"]
    assert {"200", "422", "503"} <= set(generate["responses"])
    assert "ErrorBody" in schema["components"]["schemas"]
    width = schema["components"]["schemas"]["GenerateRequest"]["properties"]["width"]
    assert "96" in str(width)  # the server's limits are in the schema (max 96 in tests)


def test_api_package_does_not_import_torch():
    code = ("import sys; import modules.api, modules.api.sdapi, modules.api.native; "
            "bad = [m for m in ('torch', 'diffusers', 'gradio') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_taesd_decoder_without_weights_is_a_clear_422(env):
    _engine, client, _folders = env
    r = client.post("/api/v1/generate", json={**SMALL, "decoder": "taesd", "save": False})
    assert r.status_code == 422 and r.json()["field"] == "decoder" and "VAE-approx" in r.json()["rule"]


def test_docs_work_offline_from_local_swagger_ui_files(env):
    """/docs loads Swagger UI from this server (the swagger-ui-py wheel), never from a CDN."""
    _engine, client, _folders = env
    html = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in html
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text


@pytest.mark.parametrize("auth", [(), (("ann", "pw"),)])
def test_healthz_without_api_flag(env, tmp_path, monkeypatch, auth):
    """Monitoring needs /healthz even when only the page is served (no --api); behind the page's --auth."""
    from fastapi.testclient import TestClient

    import webui

    engine, _client, folders = env
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    settings = make_settings(folders, api=False, auth=auth)
    client = TestClient(webui.create_app(engine, settings, "en"), follow_redirects=False)
    r = client.get("/healthz")
    if auth:
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = client.get("/healthz", auth=auth[0])
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["model"] == engine.status().model
    assert client.get("/api/v1/models").status_code != 200  # the API itself stays off without --api
