"""The page as people use it: ``webui.py`` on a free port with tiny models, driven by a real browser.

Playwright (pinned in requirements-test.txt) drives Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/setup.sh``; ``VISAGE_CHROMIUM`` names another binary). Playwright never downloads a browser here.
Without a chromium binary the module is skipped, and says so.

One server for the module (``--lang auto`` with an English system locale, so the browser's language decides).
Screenshots go to ``test-artifacts/screenshots/`` (git-ignored).
"""
from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api_fixtures import Server, wait_until
from conftest import REPO_ROOT
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.outputs import history
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters

CHROMIUM = Path(os.environ.get("VISAGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
SD15 = "tiny-sd15-diffusers-0"
ZIMAGE = "tiny-zimage-diffusers-0"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: a user preset the server lists beside the shipped ones: the shipped ones are full-size (512x704, 28 steps),
#: too slow for a tiny model on a busy 2-core machine; this one clicks and generates the same way
TEST_PRESET = {
    "id": "browser_test", "name": {"zh": "浏览器测试", "en": "Browser test"},
    "families": ["sd15", "zimage"], "prompt": "studio portrait of {prompt}, soft light",
    "negative_prompt": "blurry", "seed": 2024,
    "family_params": {"sd15": {"steps": 4, "cfg_scale": 5.0, "width": 64, "height": 96, "sampler": "Euler a"},
                      "zimage": {"steps": 2, "cfg_scale": 0.0, "width": 64, "height": 64,
                                 "sampler": "Euler (flow match)"}},
}
#: milliseconds a browser wait may take (tiny models on 2 busy cores)
WAIT_MS = 90_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium binary at {CHROMIUM} (scripts/setup.sh installs "
                                                    "Debian's chromium with apt-get; VISAGE_CHROMIUM names another)"),
    pytest.mark.timeout(240),
]


def write_tiny_lora(path: Path, unet_file: Path, seed: int = 1) -> None:
    """A kohya LoRA on two attention layers of a tiny SD1.5 U-Net (shapes read from its safetensors header)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    with safe_open(str(unet_file), "numpy") as f:
        for name in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                     "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"):
            out_features, in_features = f.get_slice(name + ".weight").get_shape()
            key = "lora_unet_" + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = rng.standard_normal((4, in_features)).astype(np.float32)
            tensors[f"{key}.lora_up.weight"] = rng.standard_normal((out_features, 4)).astype(np.float32)
            tensors[f"{key}.alpha"] = np.array(4.0, dtype=np.float32)
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def site(tiny_folders, tiny_models, tmp_path_factory):
    """webui.py serving both pages; yields ``(url, outputs folder)``."""
    sd15 = Path(tiny_models("sd15", "diffusers"))
    tiny_models("zimage", "diffusers")
    root = tmp_path_factory.mktemp("browser")
    loras = root / "loras"
    loras.mkdir()
    write_tiny_lora(loras / "tiny_face.safetensors", sd15 / "unet" / "diffusion_pytorch_model.safetensors")
    outputs = root / "outputs"
    (root / "presets").mkdir()
    (root / "presets" / "browser_test.json").write_text(json.dumps(TEST_PRESET, ensure_ascii=False), encoding="utf-8")
    server = Server(["--models-dir", str(tiny_folders.models), "--outputs-dir", str(outputs),
                     "--cache-dir", str(root / "cache"), "--presets-dir", str(root / "presets"),
                     "--styles-file", str(root / "styles.csv"), "--lora-dir", str(loras),
                     "--lang", "auto", "--model", SD15, "--no-preset-warmup", "--no-embed-cache-persist",
                     # one torch thread: on 2 shared cores, torch's spinning worker threads make a tiny
                     # generation 20x slower (0.4 s -> 8 s measured) while the browser also needs the CPU
                     "--threads", "1"],
                    root / "webui.log", env={"LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "LANGUAGE": ""})
    try:
        server.wait_listening(120)
        yield server.url, outputs
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str, *, viewport=DESKTOP, locale: str = "en-US", path: str = "/"):
    context = browser.new_context(viewport=viewport, locale=locale)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url + path)
    page.wait_for_selector("#txt2img_generate")
    page.wait_for_selector("html[data-visage-loaded]", state="attached")  # first-load values are in
    return page


@pytest.fixture
def page(browser, site):
    url, _ = site
    page = open_page(browser, url)
    wait_ready(page)
    yield page
    page.context.close()


def wait_ready(page, model: str = SD15) -> None:
    status = page.locator("#visage_status")
    wait_until(lambda: "Ready" in status.inner_text() and model in status.inner_text(), WAIT_MS / 1000,
               f"{model} to be ready (status: {status.inner_text()!r})")


def shot(page, name: str, full_page: bool = False) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def set_params(page, *, prompt: str, negative: str = "", steps: int = 3, side: int = 64, seed: int = 1) -> None:
    page.locator("#txt2img_prompt textarea").fill(prompt)
    page.locator("#txt2img_neg_prompt textarea").fill(negative)
    set_number(page, "txt2img_steps", steps)
    set_number(page, "txt2img_width", side)
    set_number(page, "txt2img_height", side)
    set_number(page, "txt2img_seed", seed)


def progress(page) -> str:
    return page.locator("#txt2img_progress").inner_text()


def wait_done(page, timeout_s: float = WAIT_MS / 1000) -> str:
    """Wait for the progress line to say Done (an error toast fails at once); returns the infotext."""
    def finished():
        errors = page.locator(".toast-body.error")
        if errors.count():
            raise AssertionError("error shown: " + errors.first.inner_text())
        return progress(page).startswith("Done")
    wait_until(finished, timeout_s, f"the generation to finish (progress: {progress(page)!r})")
    page.locator("#txt2img_gallery img").first.wait_for()
    return page.locator("#txt2img_infotext textarea").input_value()


def saved_with_seed(outputs: Path, seed: int) -> list[Path]:
    return sorted((outputs / "txt2img").rglob(f"*-{seed}.png"))


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def select_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def drop_file(page, selector: str, data: bytes, name: str, mime: str = "image/png") -> None:
    """Drag-and-drop a file onto ``selector`` the way a browser does (a DataTransfer on a drop event)."""
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""", [base64.b64encode(data).decode(), name, mime])
    target = page.locator(f"{selector} button.upload-container")  # Gradio's drop zone
    target.dispatch_event("dragenter", {"dataTransfer": transfer})
    target.dispatch_event("dragover", {"dataTransfer": transfer})
    target.dispatch_event("drop", {"dataTransfer": transfer})


@pytest.fixture(scope="module")
def first_image(browser, site) -> Path:
    """One image made through the page (Ctrl+Enter in the prompt box), seed 4242."""
    url, outputs = site
    page = open_page(browser, url)
    try:
        wait_ready(page)
        set_params(page, prompt="a portrait of a woman, soft light", negative="blurry", seed=4242)
        page.locator("#txt2img_prompt textarea").press("Control+Enter")
        wait_done(page)
        files = saved_with_seed(outputs, 4242)
        assert len(files) == 1
        return files[0]
    finally:
        page.context.close()


# -- the scenarios -----------------------------------------------------------------------------------

def test_layout_desktop_and_phone(browser, site, page):
    url, _ = site
    prompt = page.locator("#txt2img_prompt").bounding_box()
    params = page.locator("#txt2img_params").bounding_box()
    results = page.locator("#txt2img_results").bounding_box()
    gallery = page.locator("#txt2img_gallery").bounding_box()
    generate = page.locator("#txt2img_generate").bounding_box()
    # prompt boxes on top, parameters left, gallery right; Generate beside the prompt
    assert prompt["y"] + prompt["height"] <= params["y"] and prompt["y"] + prompt["height"] <= results["y"]
    assert params["x"] + params["width"] <= results["x"] + 1
    assert generate["x"] > prompt["x"] + prompt["width"] - 1 and generate["y"] < prompt["y"] + prompt["height"]
    assert gallery["y"] < DESKTOP["height"], "the output gallery must be in view without scrolling"
    assert page.locator("#txt2img_prompt textarea").get_attribute("placeholder").endswith("(Ctrl+Enter generates)")
    shot(page, "desktop-1280x800-txt2img")

    phone = open_page(browser, url, viewport=PHONE)
    try:
        wait_ready(phone)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
        p_prompt = phone.locator("#txt2img_prompt").bounding_box()
        p_params = phone.locator("#txt2img_params").bounding_box()
        p_results = phone.locator("#txt2img_results").bounding_box()
        assert p_prompt["y"] < p_params["y"] < p_results["y"], "on a phone the columns stack"
        assert p_params["width"] > PHONE["width"] * 0.7
        shot(phone, "phone-390x844-txt2img")
        shot(phone, "phone-390x844-txt2img-full", full_page=True)
    finally:
        phone.context.close()


def test_ctrl_enter_generates_with_right_infotext(site, first_image):
    _, outputs = site
    text = read_png_parameters(first_image)
    prompt, negative, params = parse_infotext(text)
    assert (prompt, negative) == ("a portrait of a woman, soft light", "blurry")
    assert params["Seed"] == "4242" and params["Steps"] == "3" and params["Size"] == "64x64"
    assert params["Model"] == SD15
    assert first_image.parent.name == datetime.now().strftime("%Y-%m-%d")


def test_preset_click_generates(page, site):
    cards = page.locator("#txt2img_preset_gallery button.gallery-item")
    for name in ("ID photo", "Realistic portrait", "Traditional Chinese (hanfu)", "Browser test"):
        assert cards.filter(has_text=name).count() == 1, name
    page.locator("#txt2img_prompt textarea").fill("a young man")
    cards.filter(has_text="Browser test").click()  # one click: fill and generate
    text = wait_done(page)
    prompt, negative, params = parse_infotext(text)
    assert params["Preset"] == "browser_test"
    assert prompt == "studio portrait of a young man, soft light" and negative == "blurry"
    assert params["Steps"] == "4" and params["Size"] == "64x96" and params["Sampler"] == "Euler a"
    assert params["Seed"] == "2024"
    assert "Browser test" in page.locator("#txt2img_active_preset").inner_text()
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "4"
    _, outputs = site
    files = saved_with_seed(outputs, 2024)
    assert len(files) == 1 and read_png_parameters(files[0]) == text
    assert page.locator("#txt2img_gallery img").count() >= 1
    shot(page, "desktop-1280x800-preset")


def test_lora_tag_in_prompt(page, site):
    _, outputs = site
    set_params(page, prompt="portrait of a man", seed=555)
    page.locator("#txt2img_generate").click()
    plain = wait_done(page)
    assert "Lora hashes" not in plain
    set_params(page, prompt="portrait of a man <lora:tiny_face:0.8>", seed=555)
    page.locator("#txt2img_generate").click()
    wait_until(lambda: "<lora:tiny_face:0.8>" in page.locator("#txt2img_infotext textarea").input_value(),
               WAIT_MS / 1000, "the LoRA image")
    text = wait_done(page)
    prompt, _neg, params = parse_infotext(text)
    assert prompt == "portrait of a man <lora:tiny_face:0.8>"
    assert params["Lora hashes"].startswith("tiny_face: ")
    files = saved_with_seed(outputs, 555)
    assert len(files) == 2
    assert pixels(files[0]) != pixels(files[1]), "the LoRA must change the image"


def test_interrupt_and_queue_position(browser, site, page):
    url, outputs = site
    set_params(page, prompt="a long one", steps=150, side=256, seed=31)
    page.locator("#txt2img_generate").click()
    wait_until(lambda: progress(page).startswith("Step"), WAIT_MS / 1000, "the long job to run")

    other = open_page(browser, url)
    try:
        set_params(other, prompt="a queued one", seed=32)
        other.locator("#txt2img_generate").click()
        wait_until(lambda: "Queued: position 1" in progress(other), 30, "the queue position")
        shot(other, "desktop-1280x800-queued")
        page.locator("#txt2img_interrupt").click()
        wait_until(lambda: progress(page).startswith("Interrupted at step"), 30, "the interruption")
        step, total = progress(page).split("step", 1)[1].strip().split("/")
        assert int(step) < int(total) == 150
        wait_done(other)
    finally:
        other.context.close()
    assert saved_with_seed(outputs, 31) == [], "an interrupted job saves nothing"
    assert len(saved_with_seed(outputs, 32)) == 1


def test_png_info_drop_and_send_to_txt2img(page, first_image):
    select_tab(page, "PNG Info")
    drop_file(page, "#pnginfo_image", first_image.read_bytes(), first_image.name)
    expected = read_png_parameters(first_image)
    boxes = page.locator("textarea")
    wait_until(lambda: expected in [boxes.nth(i).input_value() for i in range(boxes.count())], 30,
               "the dropped image's parameters")
    table = page.locator(".table-wrap").filter(has_text="Seed").first.inner_text()  # the parsed fields
    assert "4242" in table and "blurry" in table
    shot(page, "desktop-1280x800-pnginfo")
    page.get_by_role("button", name="Send to txt2img").click()
    prompt_box = page.locator("#txt2img_prompt textarea")
    wait_until(lambda: prompt_box.is_visible() and prompt_box.input_value() == "a portrait of a woman, soft light",
               30, "the prompt to come back")
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry"
    assert page.locator("#txt2img_seed input").input_value() == "4242"
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "3"


def test_language_switch_and_default(browser, site, page):
    url, _ = site
    # the browser asks for Chinese: "/" sends it to the Chinese page
    zh = open_page(browser, url, locale="zh-CN")
    try:
        assert zh.url.rstrip("/").endswith("/zh")
        assert zh.get_by_role("tab", name="文生图").count() == 1
        cards = zh.locator("#txt2img_preset_gallery button.gallery-item")
        for name in ("证件照", "写实人像", "古风", "浏览器测试"):
            assert cards.filter(has_text=name).count() == 1, name
        assert zh.locator("#txt2img_generate").inner_text().strip() == "生成"
        # errors come in Chinese too (a typed error raised by the engine at submit)
        zh.locator("#txt2img_prompt textarea").fill("肖像 <lora:no_such_lora:1>")
        zh.locator("#txt2img_generate").click()
        toast = zh.locator(".toast-body.error")
        toast.first.wait_for()
        message = toast.first.inner_text()
        assert "找不到模型：" in message and "no_such_lora" in message, message
        shot(zh, "desktop-1280x800-zh-error")
    finally:
        zh.context.close()

    # the in-page switch: English -> 中文 -> English, remembered in a cookie
    page.get_by_text("中文", exact=True).click()
    page.wait_for_url("**/zh/**")
    page.wait_for_selector("#txt2img_generate")
    assert page.locator("#txt2img_generate").inner_text().strip() == "生成"
    assert any(c["name"] == "visage_lang" and c["value"] == "zh" for c in page.context.cookies())
    page.goto(url + "/")  # the choice sticks at "/"
    page.wait_for_selector("#txt2img_generate")
    page.wait_for_selector("html[data-visage-loaded]", state="attached")  # its events are wired: clicks count
    assert page.url.rstrip("/").endswith("/zh")
    shot(page, "desktop-1280x800-zh")
    page.get_by_text("English", exact=True).click()
    # wait_for_url, not a poll of page.url: the sync API updates page.url only while one of its calls runs
    page.wait_for_url(lambda u: not u.rstrip("/").endswith("/zh") and "?" not in u, timeout=30_000)
    page.wait_for_selector("#txt2img_generate")
    assert page.locator("#txt2img_generate").inner_text().strip() == "Generate"


def test_history_send_reproduces_and_trash_moves(page, site, first_image):
    _, outputs = site
    today = first_image.parent.name
    select_tab(page, "History")
    date = page.locator("#history_date input")
    wait_until(lambda: date.input_value() == today, 30, "today's date in the picker")
    listed = history.list_images(outputs, today)
    names = [item.name for item in listed]
    index = names.index(f"txt2img/{today}/{first_image.name}")
    thumbs = page.locator("#history_gallery button.thumbnail-item")
    wait_until(lambda: thumbs.count() == len(listed), 30, "the day's images")
    assert str(len(listed)) in page.locator("#history_summary").inner_text()
    thumbs.nth(index).click()
    info = page.locator("#history_infotext textarea")
    wait_until(lambda: info.input_value() == read_png_parameters(first_image), 30, "the image's infotext")
    shot(page, "desktop-1280x800-history")

    page.locator("#history_send").click()
    prompt_box = page.locator("#txt2img_prompt textarea")
    wait_until(lambda: prompt_box.is_visible() and prompt_box.input_value() == "a portrait of a woman, soft light",
               30, "txt2img to be filled")
    page.locator("#txt2img_generate").click()
    text = wait_done(page)
    assert "Seed: 4242" in text
    copies = saved_with_seed(outputs, 4242)
    assert len(copies) == 2
    assert pixels(copies[0]) == pixels(copies[1]), "same settings and seed must give the same pixels"

    # move the copy to the trash: never deleted, same name under trash/<date>/
    copy = next(p for p in copies if p != first_image)
    select_tab(page, "History")
    summary = page.locator("#history_summary")
    wait_until(lambda: str(len(listed) + 1) in summary.inner_text(), 30, "the new image in History")
    wait_until(lambda: thumbs.count() == len(listed) + 1, 30,
               f"the new image in the gallery ({thumbs.count()} thumbnails, {summary.inner_text()!r})")
    names = [item.name for item in history.list_images(outputs, today)]
    thumbs.nth(names.index(f"txt2img/{today}/{copy.name}")).click()
    wait_until(lambda: "Seed: 4242" in info.input_value(), 30, "the copy's infotext")
    page.locator("#history_trash").click()
    wait_until(lambda: not copy.exists(), 30, "the copy to leave txt2img/")
    trashed = outputs / "trash" / today / copy.name
    assert trashed.is_file() and pixels(trashed) == pixels(first_image)
    wait_until(lambda: f"{len(listed)} image(s)" in summary.inner_text(), 30, "the count to drop")
    wait_until(lambda: thumbs.count() == len(listed), 30, f"the gallery to drop it ({thumbs.count()} thumbnails)")
    assert copy.name not in page.locator("#history_gallery").inner_text()
    shot(page, "desktop-1280x800-history-trashed")


def test_system_panel(page):
    select_tab(page, "System")
    engine = page.locator("#system_engine")
    memory = page.locator("#system_memory")
    versions = page.locator("#system_versions")
    # the tab's first text dates from the page build (the model was still loading): opening it refreshes
    wait_until(lambda: "Ready" in engine.inner_text(), 30, "the engine facts")
    text = engine.inner_text()
    assert "cpu · fp32" in text and SD15 in text and "Jobs in queue: 0" in text
    memory_text = memory.inner_text()
    assert "RAM (this process)" in memory_text and "GiB" in memory_text and "running on the CPU" in memory_text
    versions_text = versions.inner_text()
    for name in ("gradio", "torch", "diffusers", "transformers", "onnxruntime"):
        assert f"{name}: {metadata.version(name)}" in versions_text, (name, versions_text)
    assert "Hits / misses" in page.locator("#system_cache").inner_text()
    shot(page, "desktop-1280x800-system")


def test_switch_model_then_generate(page, site):
    _, outputs = site
    page.locator("#model_checkpoint input").click()
    page.get_by_role("option", name=ZIMAGE).first.click()
    wait_ready(page, ZIMAGE)
    sampler = page.locator("#txt2img_sampler input")
    wait_until(lambda: sampler.input_value() == "Euler (flow match)", 30, "the family's sampler")
    set_params(page, prompt="一位女士的肖像", steps=2, seed=77)
    page.locator("#txt2img_generate").click()
    text = wait_done(page)
    prompt, _neg, params = parse_infotext(text)
    assert prompt == "一位女士的肖像" and params["Model"] == ZIMAGE and params["Sampler"] == "Euler (flow match)"
    assert len(saved_with_seed(outputs, 77)) == 1
    # back to SD1.5 for whoever comes next
    page.locator("#model_checkpoint input").click()
    page.get_by_role("option", name=SD15).first.click()
    wait_ready(page, SD15)
