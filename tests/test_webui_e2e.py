"""webui.py as a user starts it (a subprocess on a free port), driven with gradio_client."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from api_fixtures import free_port, wait_until
from conftest import REPO_ROOT
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters


@pytest.fixture(scope="module")
def server(tiny_folders, tiny_models, tmp_path_factory):
    tiny_models("sd15", "single-file")
    tiny_models("zimage", "diffusers")
    port = free_port()
    out = tmp_path_factory.mktemp("webui-out")
    log = open(out / "webui.log", "w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "webui.py", "--port", str(port), "--models-dir", str(tiny_folders.models),
         "--outputs-dir", str(out / "outputs"), "--cache-dir", str(out / "cache"), "--lang", "en",
         "--model", "tiny-sd15-single-file-0"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            raise AssertionError("webui.py exited: " + (out / "webui.log").read_text()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, 120, "the page to listen")
    yield url, out
    proc.terminate()
    proc.wait(30)
    log.close()


def test_generate_through_the_page(server):
    from gradio_client import Client

    url, out = server
    client = Client(url, verbose=False)
    wait_until(lambda: "tiny-sd15-single-file-0" in client.predict(api_name="/status")
               and "Ready" in client.predict(api_name="/status"), 120, "the model to be ready")
    gallery, infotext, _progress = client.predict(
        "a portrait of a woman, soft light", "blurry", "Euler a", 3, 6.5, 64, 64, 4242, 1, 1, 1,
        api_name="/generate")
    assert len(gallery) == 1
    image_path = gallery[0]["image"]
    if isinstance(image_path, dict):
        image_path = image_path.get("path")
    text = read_png_parameters(image_path)
    prompt, negative, params = parse_infotext(text)
    assert prompt == "a portrait of a woman, soft light" and negative == "blurry"
    assert params["Steps"] == "3" and params["Sampler"] == "Euler a" and params["CFG scale"] == "6.5"
    assert params["Seed"] == "4242" and params["Size"] == "64x64"
    assert params["Model"] == "tiny-sd15-single-file-0"
    assert text == infotext.strip() or text in infotext
    saved = list((out / "outputs" / "txt2img").rglob("*-4242.png"))
    assert len(saved) == 1 and read_png_parameters(saved[0]) == text


def test_switch_model_then_generate(server):
    from gradio_client import Client

    url, _out = server
    client = Client(url, verbose=False)
    client.predict("tiny-zimage-diffusers-0", api_name="/switch_model")
    wait_until(lambda: "tiny-zimage-diffusers-0" in client.predict(api_name="/status"), 120, "the switch")
    gallery, infotext, _ = client.predict("一位女士的肖像", "", None, 2, 0.0, 64, 64, 5, 1, 1, 1,
                                          api_name="/generate")
    assert len(gallery) == 1
    assert "Sampler: Euler (flow match)" in infotext and "一位女士的肖像" in infotext
