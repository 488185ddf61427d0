"""The extensions system: throw-away extensions written into temp folders, loaded as Visage loads them.

A working one uses every hook (its post-processor inverts the image and says so in the infotext; its tab, route
and CLI command are checked on the page, through the API with auth, and in a subprocess); broken ones (syntax
error, register raising, bad manifests, clashing ids) are listed as failed while the others load; disabled ones
(settings file, flag) are not loaded.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from api_fixtures import SD15, make_settings, private_models
from conftest import REPO_ROOT
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.errors import InvalidRequest, NotReady
from modules.extensions import ExtensionError, load_extensions, read_config
from modules.extensions.manifest import parse_manifest
from modules.generation.params import GenerationRequest
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters

# -- throw-away extensions -------------------------------------------------------------------------------

FULL_MAIN = '''
import sys

from .pixels import invert  # relative import inside the extension's package


def register(api):
    from fastapi import APIRouter
    from modules.extensions import PostprocessResult

    def run(image, ctx):
        ctx.report("inverting", ctx.index, 1)
        return PostprocessResult(invert(image), {"Demo invert": f"v1 seed {ctx.seed}",
                                                 "Demo option": ctx.options.get("strength", "none")})

    api.add_postprocessor("demo-invert", "Invert colours", "反转颜色", run, kind="face_restore")

    built = []

    def build(ctx):
        import gradio as gr
        gr.Markdown(ctx.text("Demo tab body", "演示标签页"), elem_id="demo_tab_body")
        built.append(ctx)

    api.add_tab("main", "Demo", "演示", build)
    api.built_tabs = built  # lets the test reach the TabContext

    router = APIRouter()

    @router.get("/api/v1/ext/demo/ping")
    def ping():
        return {"pong": api.name, "greeting": api.settings.get("greeting"), "lang": api.lang,
                "models_dir": str(api.models_dir)}

    @router.post("/api/v1/ext/demo/job")
    def job():
        return {"result": api.submit("double", lambda ctx: 21 * 2).wait(30)}

    api.add_routes(router)

    def configure(p):
        p.add_argument("--who", default="world")

    def hello(args):
        print(f"hello {args.who} from {api.name}; torch loaded: {'torch' in sys.modules}")
        return 3

    api.add_cli_command("demo-hello", "say hello", configure, hello)
'''

PIXELS = '''
from PIL import ImageOps


def invert(image):
    return ImageOps.invert(image.convert("RGB"))
'''


def manifest(name: str, provides=("postprocessor", "tab", "api", "cli", "settings"), **extra) -> str:
    return json.dumps({"name": name, "version": "1.2.3", "description": f"{name} for tests",
                       "provides": list(provides), **extra})


def write_ext(root: Path, name: str, main: str | None, manifest_text: str | None = None, **files) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "extension.json").write_text(manifest(name) if manifest_text is None else manifest_text,
                                           encoding="utf-8")
    if main is not None:
        (folder / "main.py").write_text(textwrap.dedent(main), encoding="utf-8")
    for filename, text in files.items():
        (folder / filename.replace("__", ".")).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def write_demo_set(root: Path) -> Path:
    """demo (every hook), and the broken/disabled ones around it."""
    write_ext(root, "demo", FULL_MAIN, pixels__py=PIXELS)
    write_ext(root, "syntax", "def register(api)\n    pass\n", manifest("syntax", ["tab"]))
    write_ext(root, "raises", '''
        def register(api):
            api.add_postprocessor("half-done", "Half", "半", lambda im, ctx: im)
            raise RuntimeError("boom in register")
        ''', manifest("raises", ["postprocessor"]))
    write_ext(root, "badjson", "def register(api): pass\n", '{"name": "badjson", "version": ')
    write_ext(root, "misnamed", "def register(api): pass\n", manifest("other-name"))
    write_ext(root, "undeclared", '''
        def register(api):
            api.add_tab("t", "T", "T", lambda ctx: None)
        ''', manifest("undeclared", ["postprocessor"]))
    write_ext(root, "zclash", '''
        def register(api):
            api.add_postprocessor("demo-invert", "Again", "再次", lambda im, ctx: im)
        ''', manifest("zclash", ["postprocessor"]))
    write_ext(root, "noregister", "X = 1\n", manifest("noregister", []))
    write_ext(root, "offsettings", "raise SystemExit('must never be imported')\n", manifest("offsettings", []))
    write_ext(root, "offflag", "raise SystemExit('must never be imported')\n", manifest("offflag", []))
    write_ext(root, "exits", "import sys\nsys.exit(3)\n", manifest("exits", []))
    return root


def load_demo(root: Path, **kw):
    config = root.parent / "extensions.json"
    if not config.exists():
        config.write_text(json.dumps({"disabled": ["offsettings"],
                                      "options": {"demo": {"greeting": "你好", "strength": "0.5"}}}),
                          encoding="utf-8")
    return load_extensions(root, disabled={"offflag"}, settings_file=config, models_dir=root.parent / "models",
                           outputs_dir=root.parent / "outputs", lang=kw.pop("lang", "zh"), **kw)


# -- loading ----------------------------------------------------------------------------------------------

def test_broken_extensions_are_listed_with_their_error_and_the_rest_load(tmp_path):
    exts = load_demo(write_demo_set(tmp_path / "extensions"))
    assert set(exts.loaded) == {"demo"}
    assert exts.disabled == {"offsettings": "settings", "offflag": "flag"}
    failed = exts.failed
    assert set(failed) == {"syntax", "raises", "badjson", "misnamed", "undeclared", "zclash", "noregister", "exits"}
    assert "SyntaxError" in failed["syntax"] and "main.py, line 1" in failed["syntax"]
    assert failed["raises"] == "register(api) raised RuntimeError: boom in register (main.py:4)"
    assert "not valid JSON" in failed["badjson"] and "line 1" in failed["badjson"]
    assert "'other-name' differs from its folder name 'misnamed'" in failed["misnamed"]
    assert "add_tab needs 'tab' in the manifest's provides" in failed["undeclared"]
    assert "post-processor 'demo-invert' is already provided by extension demo" in failed["zclash"]
    assert "has no register(api) function" in failed["noregister"]
    assert failed["exits"].startswith("import failed: SystemExit: 3")
    # what a failed extension registered before failing is gone; only demo's hooks remain
    assert [p.id for p in exts.postprocessors] == ["demo-invert"]
    assert [t.id for t in exts.tabs] == ["main"] and len(exts.routers) == 1
    assert [c.name for c in exts.cli_commands] == ["demo-hello"]
    assert "visage_ext_demo.main" in sys.modules and "visage_ext_demo.pixels" in sys.modules
    assert not any(m.startswith(("visage_ext_raises", "visage_ext_syntax")) for m in sys.modules)
    # the listing, JSON-ready
    summary = {item["name"]: item for item in json.loads(json.dumps(exts.summary()))}
    assert summary["demo"]["state"] == "loaded" and summary["demo"]["version"] == "1.2.3"
    assert summary["demo"]["provides"] == ["postprocessor", "tab", "api", "cli", "settings"]
    assert summary["demo"]["routes"] == ["/api/v1/ext/demo/job", "/api/v1/ext/demo/ping"]
    assert summary["raises"]["state"] == "failed" and summary["raises"]["postprocessors"] == []
    assert summary["offflag"] == summary["offflag"] | {"state": "disabled", "disabled_by": "flag", "version": "1.2.3"}


def test_api_is_typed_small_and_closed_after_register(tmp_path):
    exts = load_demo(write_demo_set(tmp_path / "extensions"))
    api = exts.loaded["demo"].api
    assert api.settings == {"greeting": "你好", "strength": "0.5"} and api.lang == "zh"
    with pytest.raises(TypeError):
        api.settings["greeting"] = "changed"  # read-only
    with pytest.raises(ExtensionError, match="only be called inside register"):
        api.add_postprocessor("late", "Late", "晚", lambda im, ctx: im)
    with pytest.raises(NotReady, match="engine is not running"):
        api.submit("x", lambda ctx: None)
    assert exts.face_restorer().id == "demo-invert"
    with pytest.raises(InvalidRequest, match=r"unknown post-processor 'nope' \(available: demo-invert\)"):
        exts.resolve_postprocess(["nope"])


@pytest.mark.parametrize("data, problem", [
    ({"version": "1"}, "missing required field 'name'"),
    ({"name": "x", "version": "1", "provides": ["widgets"]}, "unknown item(s) 'widgets'"),
    ({"name": "x", "version": "1", "provides": "tab"}, "provides must be a list"),
    ({"name": "x", "version": "1", "entry": "../evil.py"}, "entry must name a .py file"),
    ({"name": "x", "version": ""}, "version must be a non-empty string"),
    ({"name": "x", "version": "1", "homepage": "h"}, "unknown field(s) homepage"),
    (["x"], "must hold a JSON object"),
])
def test_bad_manifests_say_what_is_wrong(data, problem):
    with pytest.raises(ExtensionError) as info:
        parse_manifest(data, "x")
    assert problem in str(info.value)


def test_enable_disable_writes_the_settings_file_and_applies_on_reload(tmp_path):
    root = write_demo_set(tmp_path / "extensions")
    exts = load_demo(root)
    config = tmp_path / "extensions.json"
    exts.set_enabled("demo", False)
    exts.set_enabled("offsettings", True)
    saved = json.loads(config.read_text(encoding="utf-8"))
    assert saved["disabled"] == ["demo"] and saved["options"]["demo"]["greeting"] == "你好"
    again = load_demo(root)
    assert again.disabled["demo"] == "settings" and "offsettings" in again.failed  # now tried: it exits
    assert [p.extension for p in again.postprocessors] == ["zclash"]  # demo is off: its id is free now
    assert load_demo(root, disable_all=True).loaded == {}
    # a broken settings file: every extension loads, and the page refuses to overwrite the file
    config.write_text("{not json", encoding="utf-8")
    broken = load_demo(root)
    assert "demo" in broken.loaded and "could not be read" in broken.config.error
    with pytest.raises(ExtensionError, match="could not be read"):
        broken.set_enabled("demo", False)
    assert config.read_text(encoding="utf-8") == "{not json"
    assert read_config(tmp_path / "missing.json").disabled == []


def test_loading_stays_torch_free(tmp_path):
    root = write_demo_set(tmp_path / "extensions")
    code = ("import sys; from pathlib import Path; from modules.extensions import load_extensions; "
            f"e = load_extensions(Path({str(root)!r}), models_dir=Path('m'), outputs_dir=Path('o')); "
            "print(sorted(e.loaded), [m for m in ('torch', 'diffusers', 'gradio') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['demo'] []"


# -- CLI --------------------------------------------------------------------------------------------------

def cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "modules.cli", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_subcommand_runs_and_extensions_are_listed(tmp_path):
    root = write_demo_set(tmp_path / "extensions")
    load_demo(root)  # writes the settings file next to the folder
    flags = ["--extensions-dir", root, "--extensions-config", tmp_path / "extensions.json",
             "--disable-extension", "offflag"]
    proc = cli(*flags, "demo-hello", "--who", "Ada")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "hello Ada from demo; torch loaded: False"
    assert "extension syntax failed: import failed: SyntaxError" in proc.stderr  # broken ones are named, never fatal
    listing = {i["name"]: i for i in json.loads(cli(*flags, "extensions", "--json").stdout)}
    assert listing["demo"]["cli_commands"] == ["demo-hello"]
    assert listing["raises"]["state"] == "failed" and "boom in register" in listing["raises"]["error"]
    assert listing["offflag"]["disabled_by"] == "flag"
    off = cli("--extensions-dir", root, "--disable-all-extensions", "demo-hello")
    assert off.returncode == 2 and "invalid choice: 'demo-hello'" in off.stderr


# -- engine, API, page (a tiny model) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tiny_folders, tiny_models, tmp_path_factory):
    from fastapi.testclient import TestClient

    from api_fixtures import TEST_LIMITS
    from modules.api import build_api
    from modules.engine import Engine

    root = tmp_path_factory.mktemp("ext")
    folders = private_models(root, tiny_folders, tiny_models, wanted=(("sd15", "single-file"),))
    write_ext(root / "extensions", "demo", FULL_MAIN, pixels__py=PIXELS)
    write_ext(root / "extensions", "fragile", '''
        def register(api):
            def run(image, ctx):
                raise ValueError("cannot find a face")
            api.add_postprocessor("fragile", "Fragile", "易碎", run)
        ''', manifest("fragile", ["postprocessor"]))
    write_ext(root / "extensions", "broken", "def register(api):\n    raise KeyError('x')\n", manifest("broken", []))
    settings = make_settings(folders, api_auth=(("ann", "pw"),))
    exts = load_demo(root / "extensions", lang="en")
    engine = Engine(settings, exts)
    engine.start().wait(120)
    client = TestClient(build_api(engine, settings, limits=TEST_LIMITS), raise_server_exceptions=False)
    yield engine, exts, client, folders
    engine.close()


SMALL = dict(width=64, height=64, steps=2, seed=11)


def _generate(engine, **kw):
    return engine.generate(GenerationRequest(prompt="a face", model=SD15, **(SMALL | kw))).wait(120)


def test_postprocessor_changes_pixels_and_is_recorded_in_infotext(env):
    engine, _exts, _client, _folders = env
    plain = _generate(engine)
    inverted = _generate(engine, postprocess=["demo-invert"])
    a = plain.images[0].convert("RGB")
    b = inverted.images[0].convert("RGB")
    assert a.size == b.size == (64, 64)
    assert list(b.getdata())[:50] == [tuple(255 - c for c in px) for px in list(a.getdata())[:50]]
    _p, _n, params = parse_infotext(inverted.infotexts[0])
    assert params["Demo invert"] == "v1 seed 11" and params["Demo option"] == "0.5"
    assert list(params)[-1] == "Version"  # entries go before Version, as A1111 orders extras
    saved = read_png_parameters(inverted.paths[0])
    assert "Demo invert: v1 seed 11" in saved
    assert "Demo invert" not in parse_infotext(plain.infotexts[0])[2]
    with Image.open(inverted.paths[0]) as im:
        assert list(im.convert("RGB").getdata())[:50] == list(b.getdata())[:50]


def test_unknown_and_failing_postprocessors(env):
    engine, _exts, _client, _folders = env
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(prompt="x", model=SD15, postprocess=["gpen"], **SMALL))
    assert info.value.field == "postprocess" and "unknown post-processor 'gpen'" in info.value.rule
    plain = _generate(engine)
    kept = _generate(engine, postprocess=["fragile", "demo-invert"])
    assert any("post-processor fragile failed: ValueError: cannot find a face" in n for n in kept.notes)
    params = parse_infotext(kept.infotexts[0])[2]
    assert "Demo invert" in params  # the others still ran
    assert list(kept.images[0].convert("RGB").getdata())[:20] == \
        [tuple(255 - c for c in px) for px in list(plain.images[0].convert("RGB").getdata())[:20]]


AUTH = ("ann", "pw")


def test_api_lists_extensions_serves_routes_with_auth_and_postprocesses(env):
    _engine, _exts, client, folders = env
    assert client.get("/api/v1/extensions").status_code == 401
    assert client.get("/api/v1/ext/demo/ping").status_code == 401
    listing = {i["name"]: i for i in client.get("/api/v1/extensions", auth=AUTH).json()}
    assert listing["demo"]["state"] == "loaded" and listing["demo"]["postprocessors"] == ["demo-invert"]
    assert listing["broken"]["state"] == "failed" and "KeyError: 'x' (main.py:2)" in listing["broken"]["error"]
    ping = client.get("/api/v1/ext/demo/ping", auth=AUTH).json()
    assert ping == {"pong": "demo", "greeting": "你好", "lang": "en", "models_dir": str(folders.models.parent / "models")}
    assert client.post("/api/v1/ext/demo/job", auth=AUTH).json() == {"result": 42}  # api.submit, on the queue

    body = {"prompt": "a face", "model": SD15, **SMALL, "save": False}
    native = client.post("/api/v1/generate", json=body | {"postprocess": ["demo-invert"]}, auth=AUTH)
    assert native.status_code == 200, native.text
    assert "Demo invert: v1 seed 11" in native.json()["infotexts"][0]
    bad = client.post("/api/v1/generate", json=body | {"postprocess": ["nope"]}, auth=AUTH)
    assert bad.status_code == 422 and "unknown post-processor 'nope'" in bad.text

    a1111 = {"prompt": "a face", "steps": 2, "width": 64, "height": 64, "seed": 11,
             "override_settings": {"sd_model_checkpoint": SD15}}
    restored = client.post("/sdapi/v1/txt2img", json=a1111 | {"restore_faces": True}, auth=AUTH).json()
    info = json.loads(restored["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "demo-invert"  # no "Face restoration" entry: its id
    assert "restore_faces" not in info.get("visage_ignored", [])
    plain = json.loads(client.post("/sdapi/v1/txt2img", json=a1111, auth=AUTH).json()["info"])
    assert plain["restore_faces"] is False and "Demo invert" not in plain["infotexts"][0]
    img = Image.open(io.BytesIO(base64.b64decode(restored["images"][0]))).convert("RGB")
    assert img.size == (64, 64)
    assert client.get("/sdapi/v1/face-restorers", auth=AUTH).json() == [{"name": "demo-invert", "cmd_dir": None}]


def _blocks_of(demo, kind):
    import gradio as gr

    return [b for b in demo.blocks.values() if isinstance(b, getattr(gr, kind))]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_has_the_tab_the_postprocessor_choice_and_the_extensions_accordion(env, lang):
    from modules.ui import build_blocks
    from modules.ui.i18n import Translator

    engine, exts, _client, _folders = env
    t = Translator(lang, strict=True)
    demo = build_blocks(engine, t, extensions=exts)
    config = demo.get_config_file()
    labels = {c["props"].get("label") for c in config["components"]}
    titles = [b.label for b in _blocks_of(demo, "Tab")]
    assert titles[-1] == ("演示" if lang == "zh" else "Demo")  # after Visage's own tabs
    assert any(c["props"].get("elem_id") == "demo_tab_body" for c in config["components"])
    group = next(b for b in _blocks_of(demo, "CheckboxGroup") if b.elem_id == "txt2img_postprocess")
    expected = {"en": [("Invert colours", "demo-invert"), ("Fragile", "fragile")],
                "zh": [("反转颜色", "demo-invert"), ("易碎", "fragile")]}[lang]
    assert [tuple(c) for c in group.choices] == expected
    assert t("ext.postprocess") in labels
    rows = {b.elem_id: b.value for b in _blocks_of(demo, "Markdown") if (b.elem_id or "").startswith("system_ext_")}
    assert "broken" in rows["system_ext_broken"] and "KeyError" in rows["system_ext_broken"]
    assert t("ext.state_loaded") in rows["system_ext_demo"]
    assert not t.missing
    # the tab's context runs jobs on the engine's queue
    ctx = exts.loaded["demo"].api.built_tabs[-1]
    assert ctx.lang == lang and ctx.text("a", "b") == ("b" if lang == "zh" else "a")
    job = ctx.submit("probe", lambda jctx: engine.status().state)
    assert job.wait(30) == "ready" and job.kind == "demo:probe"


def test_page_generate_sends_the_checked_postprocessors(env):
    from modules.ui import build_blocks
    from modules.ui.i18n import Translator

    engine, exts, _client, _folders = env
    demo = build_blocks(engine, Translator("en"), extensions=exts)
    fn = next(f.fn for f in demo.fns.values() if f.api_name == "generate")
    *_, last = fn("a face", "", "Euler", 2, 7.0, 64, 64, 11, 1, 1, 1, [], None, [], ["demo-invert"])
    _gallery, infotext, *_rest = last
    assert "Demo invert: v1 seed 11" in infotext
    # the Generate button: every input at its default, the checkbox group ticked
    group = next(b for b in _blocks_of(demo, "CheckboxGroup") if b.elem_id == "txt2img_postprocess")
    click = next(f for f in demo.fns.values() if group in f.inputs and f.api_name != "generate")
    overrides = {"txt2img_prompt": "a face", "txt2img_steps": 2, "txt2img_width": 64, "txt2img_height": 64,
                 "txt2img_postprocess": ["demo-invert"]}
    args = [overrides.get(block.elem_id, block.value) for block in click.inputs]
    seed_box = next(i for i, b in enumerate(click.inputs) if b.label == "Seed")
    args[seed_box] = 12
    *_, last = click.fn(*args)
    assert "Demo invert: v1 seed 12" in last[1]


def test_one_click_preset_sends_the_checked_postprocessors(env):
    from modules.ui import build_blocks
    from modules.ui.i18n import Translator

    import json

    engine, exts, _client, _folders = env
    small = {"id": "ext_small", "name": {"zh": "小", "en": "Small"}, "families": ["sd15"], "prompt": "{prompt}",
             "seed": 5, "family_params": {"sd15": {"steps": 2, "cfg_scale": 5.0, "width": 64, "height": 64,
                                                   "sampler": "Euler"}}}
    path = engine.settings.presets_dir / "ext_small.json"  # the shipped presets are full-size: slow here
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(small), encoding="utf-8")
    engine.reload_presets()
    try:
        demo = build_blocks(engine, Translator("en"), extensions=exts)
        select = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "select_preset")
        group = next(b for b in _blocks_of(demo, "CheckboxGroup") if b.elem_id == "txt2img_postprocess")
        assert select.inputs[-1] is group
        args = [block.value for block in select.inputs]
        # the small preset's card, the prompt, the ticked box
        args[0], args[3], args[-1] = args[1].index("ext_small"), "a face", ["demo-invert"]
        *_, last = select.fn(*args)
        assert any(isinstance(v, str) and "Demo invert: v1 seed 5" in v for v in last), last
    finally:
        path.unlink()
        engine.reload_presets()


def test_enable_checkbox_writes_the_settings_file(env, tmp_path):
    from modules.ui import extensions_panel
    from modules.ui.i18n import Translator

    _engine, exts, _client, _folders = env
    config = Path(exts.config_path)
    before = config.read_text(encoding="utf-8")
    try:
        extensions_panel.make_set_enabled(exts, Translator("en"), "fragile")(False)
        assert json.loads(config.read_text(encoding="utf-8"))["disabled"] == ["fragile", "offsettings"]
        extensions_panel.make_set_enabled(exts, Translator("en"), "fragile")(True)
        assert json.loads(config.read_text(encoding="utf-8"))["disabled"] == ["offsettings"]
    finally:
        config.write_text(before, encoding="utf-8")
