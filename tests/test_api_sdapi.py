"""The A1111-compatible API through the real ``webuiapi`` client (PyPI), against ``webui.py --api`` started
as a user would (subprocess, free port, tiny models), with page auth, API auth and an offline --share."""
from __future__ import annotations

import base64
import io
import json

import psutil
import pytest
import requests
from PIL import Image

from api_fixtures import SD15, ZIMAGE, Server, private_models, wait_until
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters

webuiapi = pytest.importorskip("webuiapi")

API_USER, API_PASS = "api-user", "api-pass"
PAGE_USER, PAGE_PASS = "page-user", "page-pass"


@pytest.fixture(scope="module")
def server(tiny_folders, tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("sdapi")
    folders = private_models(root, tiny_folders, tiny_models)
    (folders.models / "styles.csv").write_text("name,prompt,negative_prompt\nSoft,\"{prompt}, soft light\",\"\"\n",
                                               encoding="utf-8")
    args = ["--api", "--models-dir", str(folders.models), "--outputs-dir", str(folders.outputs),
            "--cache-dir", str(folders.cache), "--config-file", str(folders.cache / "config.json"),
            "--styles-file", str(folders.models / "styles.csv"), "--presets-dir", str(folders.cache / "presets"),
            "--lang", "en", "--model", SD15, "--no-preset-warmup", "--no-embed-cache-persist",
            "--auth", f"{PAGE_USER}:{PAGE_PASS}", "--api-auth", f"{API_USER}:{API_PASS}", "--share"]
    # offline share: point Gradio's share service at a closed local port so it fails fast and cleanly
    srv = Server(args, root / "webui.log", env={"GRADIO_SHARE_SERVER_ADDRESS": "127.0.0.1:9"})
    try:
        srv.wait_listening()
        wait_until(lambda: requests.get(f"{srv.url}/healthz", auth=(API_USER, API_PASS), timeout=5)
                   .json()["ready"], 120, "the model to be ready")
        yield srv, folders
    finally:
        srv.stop()


@pytest.fixture
def api(server):
    srv, _folders = server
    return webuiapi.WebUIApi(host="127.0.0.1", port=srv.port, username=API_USER, password=API_PASS,
                             sampler="Euler a", steps=2)


def test_txt2img_png_infotext_matches_the_request_field_by_field(api, server):
    result = api.txt2img(prompt="portrait of a woman, window light", negative_prompt="blurry, lowres",
                         seed=4242, steps=2, cfg_scale=6.5, width=64, height=64, sampler_name="Euler a",
                         batch_size=2, styles=[])
    assert len(result.images) == 2 and result.image.size == (64, 64)
    info = result.info
    assert info["all_seeds"] == [4242, 4243] and info["seed"] == 4242
    for key in ("prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "width", "height",
                "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_name", "sd_model_hash",
                "infotexts", "styles", "clip_skip", "job_timestamp", "version"):
        assert key in info, key
    for i, image in enumerate(result.images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=None)
        text = image.info["parameters"]
        assert text == info["infotexts"][i]
        prompt, negative, params = parse_infotext(text)
        assert prompt == "portrait of a woman, window light" and negative == "blurry, lowres"
        assert params["Steps"] == "2" and params["Sampler"] == "Euler a" and params["CFG scale"] == "6.5"
        assert params["Seed"] == str(4242 + i) and params["Size"] == "64x64"
        assert params["Model"] == SD15 and params["Model hash"] == info["sd_model_hash"]
    assert info["sd_model_name"] == SD15 and info["width"] == 64 and info["steps"] == 2
    assert info["cfg_scale"] == 6.5 and info["sampler_name"] == "Euler a"
    # parameters echo the request, including the A1111 fields Visage ignores
    assert result.parameters["prompt"] == "portrait of a woman, window light"
    assert result.parameters["enable_hr"] is False and "alwayson_scripts" in result.parameters
    assert "visage_ignored" not in info  # nothing that matters was asked for


def test_ignored_fields_are_accepted_and_reported(api):
    result = api.txt2img(prompt="a face", seed=1, width=64, height=64, steps=2,
                         restore_faces=True, tiling=True)  # enable_hr is not ignored: tests/test_hires.py
    assert len(result.images) == 1
    assert set(result.info["visage_ignored"]) == {"restore_faces", "tiling"}


def test_scheduler_karras_and_styles(api):
    result = api.txt2img(prompt="a man", seed=2, width=64, height=64, steps=2, sampler_name="DPM++ 2M",
                         scheduler="Karras", styles=["Soft"])
    prompt, _negative, params = parse_infotext(result.info["infotexts"][0])
    assert params["Sampler"] == "DPM++ 2M Karras" and prompt == "a man, soft light"
    assert result.info["styles"] == ["Soft"]
    with pytest.raises(RuntimeError) as err:
        api.txt2img(prompt="a man", width=64, height=64, steps=2, styles=["No such style"])
    assert err.value.args[0] == 422


def test_listings_samplers_models_loras_styles_options(api):
    models = api.get_sd_models()
    by_name = {m["model_name"]: m for m in models}
    assert {SD15, ZIMAGE} <= set(by_name)
    for m in models:
        assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(m)
    assert by_name[SD15]["title"] == f"{SD15} [{by_name[SD15]['hash']}]"
    assert by_name[SD15]["sha256"].startswith(by_name[SD15]["hash"])
    names = api.util_get_sampler_names()
    assert {"Euler a", "Euler", "DPM++ 2M Karras", "Euler (flow match)"} <= set(names)
    assert all({"name", "aliases", "options"} <= set(s) for s in api.get_samplers())
    assert {s["name"] for s in api.get_schedulers()} == {"automatic", "karras"}
    assert api.get_loras() == []
    assert api.get_prompt_styles() == [{"name": "Soft", "prompt": "{prompt}, soft light", "negative_prompt": ""}]
    options = api.get_options()
    assert options["sd_model_checkpoint"] == by_name[SD15]["title"]
    assert options["sd_checkpoint_hash"] == by_name[SD15]["sha256"]
    assert api.util_get_current_model() == by_name[SD15]["title"]
    assert api.refresh_checkpoints() is None  # A1111 answers null
    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
    assert api.interrupt() is None


def test_switch_model_via_options_and_per_request_override(api, server):
    _srv, folders = server
    api.util_set_model(ZIMAGE)  # POST /options {sd_model_checkpoint}: waits until loaded
    assert api.util_get_current_model().startswith(ZIMAGE)
    result = api.txt2img(prompt="一位女士的肖像", seed=3, width=64, height=64, steps=2, cfg_scale=0)
    _prompt, _neg, params = parse_infotext(result.info["infotexts"][0])
    assert params["Model"] == ZIMAGE and params["Sampler"] == "Euler (flow match)"  # "Euler a" mapped
    # a per-request override runs on SD1.5 and leaves Z-Image selected
    result = api.txt2img(prompt="a face", seed=3, width=64, height=64, steps=2,
                         override_settings={"sd_model_checkpoint": SD15})
    assert parse_infotext(result.info["infotexts"][0])[2]["Model"] == SD15
    assert api.util_get_current_model().startswith(ZIMAGE)
    api.set_options({"sd_model_checkpoint": SD15, "CLIP_stop_at_last_layers": 2})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 2
    result = api.txt2img(prompt="a face", seed=3, width=64, height=64, steps=2)
    assert parse_infotext(result.info["infotexts"][0])[2]["Clip skip"] == "2" and result.info["clip_skip"] == 2
    assert json.loads((folders.cache / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    api.set_options({"CLIP_stop_at_last_layers": 1})
    answer = api.set_options({"sd_model_checkpoint": "no-such-model"})
    assert answer["error"] == "model_not_found" and "no-such-model" in answer["detail"]
    assert api.util_get_current_model().startswith(SD15)


def test_png_info_round_trip(api):
    result = api.txt2img(prompt="a face, 人像", negative_prompt="blur", seed=77, width=64, height=64, steps=2)
    info = api.png_info(result.image)
    assert info.info == result.info["infotexts"][0]
    params = info.json["parameters"]
    assert params["Prompt"] == "a face, 人像" and params["Seed"] == "77" and params["Size-1"] == 64


def test_save_images_writes_files_only_when_asked(api, server):
    _srv, folders = server
    before = set(folders.outputs.rglob("*.png"))
    api.txt2img(prompt="x", seed=501, width=64, height=64, steps=2)
    assert set(folders.outputs.rglob("*.png")) == before  # A1111's default: save_images=False
    result = api.txt2img(prompt="x", seed=502, width=64, height=64, steps=2, save_images=True)
    saved = list(folders.outputs.rglob("*-502.png"))
    assert len(saved) == 1 and read_png_parameters(saved[0]) == result.info["infotexts"][0]


def test_credentials_required_and_page_protected(server):
    srv, _folders = server
    assert requests.get(f"{srv.url}/sdapi/v1/sd-models", timeout=10).status_code == 401
    assert requests.get(f"{srv.url}/sdapi/v1/sd-models", auth=(PAGE_USER, PAGE_PASS), timeout=10).status_code == 401
    r = requests.post(f"{srv.url}/sdapi/v1/txt2img", json={"prompt": "x"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    # the page (Gradio) asks for its own login; its config is not served without it
    assert requests.get(f"{srv.url}/config", timeout=10).status_code == 401
    login = requests.post(f"{srv.url}/login", data={"username": PAGE_USER, "password": PAGE_PASS}, timeout=10)
    assert login.status_code == 200


def test_binds_localhost_and_share_fails_cleanly_offline(server):
    srv, _folders = server
    listening = [c for c in psutil.Process(srv.proc.pid).net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == srv.port]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    wait_until(lambda: "share: could not create a public link" in srv.log(), 60, "the share attempt to fail")
    assert srv.proc.poll() is None
    assert requests.get(f"{srv.url}/healthz", auth=(API_USER, API_PASS), timeout=10).json()["ready"]


def test_share_without_auth_refuses_to_start(capsys):
    import webui

    assert webui.main(["--share", "--api"]) == 2
    err = capsys.readouterr().err
    assert "--share" in err and "--auth" in err
    assert webui.main(["--share", "--nowebui"]) == 2


def test_webuiapi_img2img_and_inpaint_round_trip(api):
    """The real client's img2img (with and without a mask), unchanged: A1111's fields in, A1111's info out,
    the photo's size kept, and outside the mask the photo itself."""
    from PIL import Image, ImageChops

    photo = Image.new("RGB", (64, 64), (150, 110, 90))
    result = api.img2img(images=[photo], prompt="a face", seed=7, steps=2, denoising_strength=0.5,
                         sampler_name="Euler a", cfg_scale=7, width=64, height=64)  # the client sends 512 else
    assert len(result.images) == 1 and result.image.size == (64, 64)
    _p, _n, params = parse_infotext(result.info["infotexts"][0])
    assert params["Denoising strength"] == "0.5" and params["Seed"] == "7"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = api.img2img(images=[photo], mask_image=mask, prompt="a face", seed=7, steps=2, width=64,
                            height=64, denoising_strength=0.9, mask_blur=0, inpainting_fill=1,
                            inpaint_full_res=False)
    out = inpainted.image.convert("RGB")
    assert out.size == (64, 64)
    outside = ImageChops.difference(out, photo).crop((0, 0, 64, 12))  # a band far from the mask
    assert outside.getbbox() is None, "pixels outside the mask changed"
