"""The Gradio page, driven with a fake engine (no torch, no models)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from modules import errors  # noqa: E402
from modules.errors import DownloadError, InvalidRequest, ModelLoadError, ModelNotFound, VisageError  # noqa: E402
from modules.families import FLOW_SAMPLERS, SD_SAMPLERS, Family  # noqa: E402
from modules.embedding_cache.stats import CacheStats  # noqa: E402
from modules.generation.params import GenerationRequest, GenerationResult  # noqa: E402
from modules.generation.prompting import resolve_prompts  # noqa: E402
from modules.jobs import JobQueue  # noqa: E402
from modules.lora import LoraInfo, check_compatible, find_lora, parse_prompt_loras  # noqa: E402
from modules.lora.formats import LOHA_REASON, LoraFormat  # noqa: E402
from modules.messages import Message  # noqa: E402
from modules.outputs.infotext import build_infotext  # noqa: E402
from modules.presets import PresetStore  # noqa: E402
from modules.registry.entry import ModelEntry, ModelFormat  # noqa: E402
from modules.settings import Settings  # noqa: E402
from modules.styles import load_styles  # noqa: E402
from modules.ui import build_blocks, build_page, make_send_to_txt2img  # noqa: E402
from modules.ui.i18n import EN, ZH, Translator, error_text, resolve_lang  # noqa: E402
from modules.ui.txt2img import PARAM_FIELDS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
A1111_TEXT = ("portrait of a woman, soft light\n"
              "Negative prompt: blurry, lowres\n"
              "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, "
              "Size: 512x768, Model hash: 0123456789, Model: tiny-sd15, Clip skip: 2")


@pytest.fixture(autouse=True, scope="module")
def gradio_tmp(tmp_path_factory):
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    yield
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


# -- fake engine ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FakeStatus:
    state: str
    model: str | None
    family: str | None
    message: str
    queue_length: int
    device: str
    dtype: str
    in_ram: tuple = ()


STYLES_CSV = ("name,prompt,negative_prompt\n"
              "Film,\"{prompt}, film grain\",digital\n"
              "Sharp,sharp focus,blurry\n")


class FakeEngine:
    """The engine interface the page uses, with a real JobQueue and instant fake jobs.

    ``gate``: generation jobs pause after step 3 until it is set (so tests can watch progress);
    merge jobs pause at their "fusing" stage.
    Presets: the shipped ones plus a user folder under ``root``; styles: ``root/styles.csv``.
    ``requests``: what the jobs ran (preset and styles applied, as the real engine does);
    ``submitted``: the requests exactly as the page sent them.
    LoRAs: ``lora_infos`` (no files); ``applied`` holds each generation's ``(name, unet, te)`` list
    (tags and request list, checked as the real engine does), ``notes`` goes into every result;
    ``merges`` records ``merge_lora`` calls.
    """

    def __init__(self, root: Path):
        self.queue = JobQueue(max_pending=4, name="fake-worker")
        self.queue.start()
        self.entries = [
            ModelEntry("tiny-sd15", Path("/m/tiny-sd15.safetensors"), ModelFormat.SINGLE_FILE, Family.SD15,
                       hash="0123456789"),
            ModelEntry("tiny-zimage", Path("/m/tiny-zimage"), ModelFormat.DIFFUSERS, Family.ZIMAGE),
            ModelEntry("broken", Path("/m/broken.safetensors"), ModelFormat.SINGLE_FILE, Family.SD15),
            ModelEntry("old", Path("/m/old.ckpt"), ModelFormat.PICKLE, None, supported=False,
                       reason="pickle checkpoints are not loaded"),
        ]
        self.current = self.entries[0]
        self.gate = threading.Event()
        self.gate.set()
        self.requests: list[GenerationRequest] = []
        self.submitted: list[GenerationRequest] = []
        self.refreshes = 0
        self._presets = PresetStore([REPO / "presets", root / "presets"], save_dir=root / "presets")
        self.styles_file = root / "styles.csv"
        self.styles_file.write_text(STYLES_CSV, encoding="utf-8")
        self.stats = CacheStats(hits=3, misses=1, entries=4, bytes=3 * 2**20, max_bytes=256 * 2**20,
                                time_saved_s=1.25, disk_entries=2, disk_bytes=2**20, disk_hits=1)
        self.lora_infos = fake_loras()
        self.lora_scans = 0
        self.applied: list[list[tuple[str, float, float]]] = []
        self.notes: list[str] = []
        self.merges: list[tuple] = []

    def close(self):
        self.gate.set()
        self.queue.stop()

    def status(self):
        return FakeStatus("ready", self.current.title, self.current.family.value, "", len(self.queue), "cpu", "fp32")

    def models(self, refresh: bool = False):
        self.refreshes += bool(refresh)
        return list(self.entries)

    def _entry(self, name):
        for e in self.entries:
            if name in (e.name, e.title):
                return e
        raise ModelNotFound(f"no model named {name!r}")

    def family_of(self, model_name=None):
        return self._entry(model_name).family if model_name else self.current.family

    def styles(self):
        return load_styles(self.styles_file)

    def loras(self, refresh: bool = False):
        self.lora_scans += bool(refresh)
        return list(self.lora_infos)

    def _wanted_loras(self, req: GenerationRequest, family):
        _clean, tags = parse_prompt_loras(req.prompt)
        wanted = [(t.name, t.unet_weight, t.te_weight) for t in tags]
        wanted += [(name, float(w), float(w)) for name, w in req.loras]
        for name, _u, _t in wanted:
            check_compatible(find_lora(self.lora_infos, name), family)
        return wanted

    def cache_stats(self):
        return self.stats

    # presets: the engine's methods, on a real store
    def presets(self):
        return self._presets.list()

    def preset(self, preset_id):
        return self._presets.get(preset_id)

    def save_preset(self, preset):
        return self._presets.save(preset)

    def delete_preset(self, preset_id):
        self._presets.delete(preset_id)

    def is_user_preset(self, preset_id):
        return self._presets.path_of(preset_id).parent.resolve() == self._presets.save_dir.resolve()

    def preset_thumbnail(self, preset_id):
        return self._presets.thumbnail_path(preset_id)

    def reload_presets(self):
        self._presets.reload()

    def preset_errors(self):
        return list(self._presets.errors)

    def suggested_models(self):
        return [{"repo_id": "Tongyi-MAI/Z-Image-Turbo", "family": "zimage", "note": "needs >= 16 GB"}]

    def queue_position(self, job):
        return self.queue.position(job)

    def interrupt(self):
        return self.queue.interrupt()

    def switch_model(self, name):
        entry = self._entry(name)

        def run(ctx):
            ctx.report("loading")
            if entry.name == "broken":
                raise ModelLoadError("broken.safetensors is truncated")
            self.current = entry
            return entry
        return self.queue.submit("switch", run)

    def generate(self, request: GenerationRequest):
        family = self.current.family
        req = resolve_prompts(request, family, self._presets, self.styles_file).with_defaults(family)
        req.check_inputs(family)
        loras = self._wanted_loras(req, family)
        self.submitted.append(request)
        self.requests.append(req)
        self.applied.append(loras)
        notes = list(self.notes)

        def run(ctx):
            start = time.perf_counter()
            for i in range(req.steps):
                ctx.check_cancelled()
                ctx.report("denoising", i + 1, req.steps)
                if i + 1 == 3:
                    self.gate.wait(10)
            count = req.batch_size * req.batch_count
            seed = req.seed if req.seed >= 0 else 42
            seeds = [seed + i for i in range(count)]
            images = [Image.new("RGB", (req.width, req.height), (10 * i, 80, 160)) for i in range(count)]
            texts = [build_infotext(req.prompt, req.negative_prompt,
                                    {"Steps": req.steps, "Sampler": req.sampler, "CFG scale": req.cfg_scale,
                                     "Seed": s, "Size": f"{req.width}x{req.height}", "Model": self.current.name})
                     for s in seeds]
            return GenerationResult(images, seeds, texts, [], self.current.title, time.perf_counter() - start,
                                    notes=notes)
        return self.queue.submit("generate", run)

    def merge_lora(self, base, loras, out_name, *, fmt="single-file", dtype="fp16"):
        entry = self._entry(base)
        wanted = [(find_lora(self.lora_infos, name), float(u), float(t)) for name, u, t in loras]
        for info, _u, _t in wanted:
            check_compatible(info, entry.family)
        if fmt not in ("single-file", "diffusers"):
            raise InvalidRequest("format", Message("rule.one_of_not", choices="single-file, diffusers", value=fmt))
        name = out_name.strip()
        if "/" in name or ".." in name:
            raise errors.UnsafeName(f"{out_name!r} leaves the models folder")
        if any(e.name == name for e in self.entries):
            raise InvalidRequest("out", Message("rule.exists_in", name=f"{name}.safetensors", folder="/m"))
        self.merges.append((base, list(loras), name, fmt, dtype))

        def run(ctx):
            ctx.report("loading")
            kept = [(i, u, t) for i, u, t in wanted if u or t]
            if not kept:
                raise InvalidRequest("loras", Message("rule.lora_nonzero"))
            total = len(kept) + 4
            ctx.report("merging: hashing", 0, total)
            for n, (info, _u, _t) in enumerate(kept, 1):
                ctx.report(f"merging: loading LoRA {info.name}", n, total)
            ctx.report("merging: fusing", len(kept) + 1, total)
            self.gate.wait(10)
            ctx.check_cancelled()
            ctx.report(f"merging: converting to {dtype}", len(kept) + 2, total)
            ctx.report(f"merging: writing {name}.safetensors", len(kept) + 3, total)
            suffix = ".safetensors" if fmt == "single-file" else ""
            new = ModelEntry(name, Path(f"/m/{name}{suffix}"), fmt, entry.family)
            self.entries.append(new)
            ctx.report("merging: done", total, total)
            return new
        return self.queue.submit("merge", run)

    def starter_packs(self):
        from modules.downloads.packs import PACKS

        return list(PACKS)

    def plan_download(self, pack=None, repo_id=None, filename=None, url=None):
        """As the real engine says it with no network (tests/test_downloads.py runs the real one on a local Hub)."""
        from modules.downloads.hub import check_online

        check_online(str(pack or repo_id or url), "models", f"python -m modules.cli download --pack {pack}")
        raise AssertionError("the fake engine is always offline (HF_HUB_OFFLINE=1)")

    def download_model(self, repo_id):
        if repo_id.count("/") != 1:
            raise DownloadError(f"{repo_id!r} is not a Hugging Face repo id (expected 'org/name')")

        def run(ctx):
            ctx.report("downloading", 512 * 1024, 2 * 1024 * 1024)
            self.gate.wait(10)
            ctx.report("downloading", 2 * 1024 * 1024, 2 * 1024 * 1024)
            return Path("/hf/models--" + repo_id.replace("/", "--"))
        return self.queue.submit("download", run)


def fake_loras() -> list[LoraInfo]:
    """LoRAs of every kind the picker tells apart (no files behind them)."""
    def info(name, fmt, family, rank=8, te=True, **kw):
        return LoraInfo(name=name, path=Path(f"/loras/{name}.safetensors"), format=fmt, family=family, rank=rank,
                        has_text_encoder=te, has_unet=True, alpha_present=True, rel_name=name, **kw)
    return [
        info("xl_detail", LoraFormat.KOHYA, Family.SDXL, rank=16),
        info("soft_light", LoraFormat.KOHYA, Family.SD15, rank=4, te=False),
        info("old_loha", LoraFormat.LOHA, Family.SD15, supported=False, reason=LOHA_REASON),
        info("mystery", LoraFormat.DIFFUSERS, None, rank=None, te=False),
        info("aw_portrait_z", LoraFormat.DIFFUSION_MODEL, Family.ZIMAGE, rank=32, te=False),
        info("Film_Grain", LoraFormat.KOHYA, Family.SD15, alias="filmgrain"),
    ]


@pytest.fixture
def engine(tmp_path):
    e = FakeEngine(tmp_path)
    yield e
    e.close()


def endpoint(demo: gr.Blocks, api_name: str):
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def run_until(gen, predicate, limit_s: float = 10.0):
    """Advance a handler generator until ``predicate(output)``; return the outputs seen."""
    seen = []
    deadline = time.monotonic() + limit_s
    for out in gen:
        seen.append(out)
        if predicate(out) or time.monotonic() > deadline:
            break
    return seen


def txt2img_args(**over):
    values = dict(prompt="a face", negative_prompt="", sampler="Euler", steps=5, cfg_scale=7.0, width=64,
                  height=64, seed=7, batch_size=2, batch_count=1, clip_skip=1)
    values.update(over)
    return [values[name] for name in PARAM_FIELDS]


# -- import hygiene ---------------------------------------------------------------------------------

def test_ui_import_leaves_torch_out():
    code = ("import sys, modules.ui, modules.ui.txt2img, modules.ui.pnginfo, modules.ui.models_tab, "
            "modules.ui.presets_panel, modules.ui.system_tab; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


# -- translation --------------------------------------------------------------------------------------

def test_tables_have_the_same_keys_and_no_empty_strings():
    assert set(EN) == set(ZH)
    assert all(EN[k] and ZH[k] for k in EN)
    # the same placeholders in both languages
    for key in EN:
        assert set(re.findall(r"{(\w+)}", EN[key])) == set(re.findall(r"{(\w+)}", ZH[key])), key


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_error_code_and_request_field_is_translated():
    codes = {VisageError.code} | {c.code for c in _all_subclasses(VisageError)}
    assert {"invalid_request", "queue_full", "download_error", "model_load_error"} <= codes
    for code in codes:
        assert f"error.{code}" in EN and f"error.{code}" in ZH, code
    for name in PARAM_FIELDS:
        assert f"field.{name}" in EN, name


def test_every_key_used_in_the_ui_source_exists():
    used = set()
    for path in (REPO / "modules" / "ui").glob("*.py"):
        used |= set(re.findall(r'\bt\(\s*"([a-z0-9_.]+)"', path.read_text(encoding="utf-8")))
    assert len(used) > 60
    assert sorted(used - set(EN)) == []


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_builds_and_every_visible_string_is_translated(engine, lang):
    t = Translator(lang, strict=True)
    demo = build_blocks(engine, t)
    assert isinstance(demo, gr.Blocks)
    assert not t.missing
    shown = []
    for block in demo.blocks.values():
        for attr in ("label", "info", "placeholder"):
            value = getattr(block, attr, None)
            if isinstance(value, str) and value:
                shown.append(value)
        if isinstance(block, (gr.Button, gr.Markdown)) and block.value:
            shown.append(block.value)
        if isinstance(block, gr.Dataframe):
            shown.extend(block.headers)
    assert len(shown) > 30
    escaped = [s for s in shown if s not in t.produced]
    assert escaped == []
    if lang == "zh":
        assert "提示词" in shown and "Prompt" not in shown
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert {"generate", "interrupt", "switch_model", "refresh_models", "status", "png_info",
            "download_model"} <= public


def test_build_page_follows_settings_and_lang(engine, monkeypatch):
    demo = build_page(engine, Settings(lang="zh"), lang=None)
    assert demo.title == ZH["app.title"]
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert ZH["tab.pnginfo"] in labels
    labels = {getattr(b, "label", None) for b in build_page(engine, Settings(lang="zh"), lang="en").blocks.values()}
    assert EN["tab.pnginfo"] in labels and ZH["tab.pnginfo"] not in labels
    monkeypatch.setenv("LANGUAGE", "zh_CN:zh")
    assert resolve_lang("auto") == "zh"
    monkeypatch.setenv("LANGUAGE", "de_DE")
    assert resolve_lang("auto") == "en"
    with pytest.raises(ValueError):
        resolve_lang("fr")


@pytest.mark.parametrize("bad", [
    dict(prompt="x" * 5000), dict(steps=0), dict(cfg_scale=31.0), dict(width=500), dict(height=4096),
    dict(seed=-2), dict(batch_size=0), dict(batch_count=99), dict(sampler="Nope"), dict(clip_skip=0),
])
def test_every_request_rule_is_translated_to_chinese(bad):
    req = GenerationRequest(**{**dict(prompt="p"), **bad}).with_defaults(Family.SD15)
    with pytest.raises(InvalidRequest) as info:
        req.check_inputs(Family.SD15)
    zh = error_text(Translator("zh", strict=True), info.value)
    en = error_text(Translator("en", strict=True), info.value)
    assert "must" not in zh and zh.startswith("参数“")
    assert info.value.rule in en


# -- txt2img ------------------------------------------------------------------------------------------

def test_generate_yields_step_progress_then_images(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    engine.gate.clear()
    gen = endpoint(demo, "generate")(*txt2img_args())
    seen = run_until(gen, lambda out: out[2] == "Step 3/5")
    assert seen[-1][2] == "Step 3/5", seen
    engine.gate.set()
    rest = list(gen)
    gallery, infotext, status, texts, seeds = rest[-1]
    assert len(gallery) == 2 and gallery[0].size == (64, 64)
    assert gallery[0].info["parameters"] == texts[0]
    assert infotext.startswith("a face\n") and "Seed: 7" in infotext and "Sampler: Euler" in infotext
    assert seeds == [7, 8]
    assert status.startswith("Done: 2 image(s)")
    req = engine.requests[-1]
    assert (req.steps, req.width, req.sampler, req.batch_size, req.seed) == (5, 64, "Euler", 2, 7)


def test_generate_reports_queue_position(engine):
    demo = build_blocks(engine, Translator("zh", strict=True))
    release = threading.Event()
    started = threading.Event()
    blocker = engine.queue.submit("blocker", lambda ctx: (started.set(), release.wait(10)))
    assert started.wait(5)
    try:
        gen = endpoint(demo, "generate")(*txt2img_args(steps=2, batch_size=1))
        first = next(gen)
        assert first[2] == "排队中：第 1 位"
    finally:
        release.set()
    final = list(gen)[-1]
    assert len(final[0]) == 1 and final[2].startswith("完成：1 张图片")
    blocker.wait(5)


def test_empty_fields_mean_family_defaults(engine):
    demo = build_blocks(engine, Translator("en"))
    list(endpoint(demo, "generate")(*txt2img_args(sampler=None, steps=None, cfg_scale=None, width=None,
                                                  height=None, seed=None, batch_size=1)))
    req = engine.requests[-1]
    assert (req.steps, req.cfg_scale, req.width, req.sampler, req.seed) == (25, 7.0, 512, "DPM++ 2M Karras", -1)


@pytest.mark.parametrize("lang, expected", [
    ("en", "Width: must be a multiple of 8"),
    ("zh", "参数“宽度”无效：必须是 8 的倍数"),
])
def test_invalid_request_becomes_a_translated_error(engine, lang, expected):
    demo = build_blocks(engine, Translator(lang, strict=True))
    with pytest.raises(gr.Error) as info:
        next(endpoint(demo, "generate")(*txt2img_args(width=500)))
    assert info.value.message == expected
    assert info.value.title == (EN if lang == "en" else ZH)["error.title"]
    assert "Traceback" not in info.value.message
    with pytest.raises(gr.Error) as info:
        next(endpoint(demo, "generate")(*txt2img_args(steps="many")))
    assert "must be a number" in info.value.message or "必须是数字" in info.value.message


def test_interrupt_stops_the_job_and_says_so(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    engine.gate.clear()
    gen = endpoint(demo, "generate")(*txt2img_args())
    run_until(gen, lambda out: out[2] == "Step 3/5")
    endpoint(demo, "interrupt")()
    engine.gate.set()
    with pytest.warns(UserWarning, match="Interrupted at step 3/5"):
        rest = list(gen)
    assert rest[-1][2] == "Interrupted at step 3/5"


def test_abandoned_generation_is_cancelled(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    engine.gate.clear()
    gen = endpoint(demo, "generate")(*txt2img_args())
    run_until(gen, lambda out: out[2] == "Step 3/5")
    job = engine.queue.current
    gen.close()  # what gradio does when the browser tab closes
    engine.gate.set()
    with pytest.raises(errors.Interrupted):
        job.wait(5)


def test_failed_job_shows_message_not_traceback(engine):
    demo = build_blocks(engine, Translator("en", strict=True))

    def boom(request):
        return engine.queue.submit("generate", lambda ctx: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))
    engine.generate = boom
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(gr.Error) as info:
            list(endpoint(demo, "generate")(*txt2img_args()))
    assert info.value.message == "Unexpected failure (RuntimeError): CUDA out of memory"


# -- model switching -------------------------------------------------------------------------------

def test_switching_model_resets_family_defaults(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    outputs = list(endpoint(demo, "switch_model")("tiny-zimage"))
    dropdown_first, _, sampler, steps, cfg, width, height, clip_skip = outputs[0]
    assert [c[1] for c in sampler.choices] == list(FLOW_SAMPLERS)
    assert sampler.value == FLOW_SAMPLERS[0]
    assert (steps.value, cfg.value, width.value, height.value) == (8, 0.0, 1024, 1024)
    assert clip_skip.interactive is False
    assert outputs[-1][0] == "tiny-zimage" and engine.current.name == "tiny-zimage"
    assert "tiny-zimage" in outputs[-1][1]  # the status line


def test_failed_switch_restores_and_explains(engine):
    demo = build_blocks(engine, Translator("zh", strict=True))
    gen = endpoint(demo, "switch_model")("broken")
    outputs = []
    with pytest.raises(gr.Error) as info:
        for out in gen:
            outputs.append(out)
    assert info.value.message == "模型加载失败：broken.safetensors is truncated"
    restored = outputs[-1]
    assert restored[0].value == "tiny-sd15"
    assert [c[1] for c in restored[2].choices] == list(SD_SAMPLERS)
    with pytest.raises(gr.Error) as info:
        list(endpoint(demo, "switch_model")("nope"))
    assert info.value.message.startswith("找不到模型：")


# -- PNG Info ----------------------------------------------------------------------------------------

def _png(path: Path, text: str | None) -> Path:
    meta = PngInfo()
    if text is not None:
        meta.add_text("parameters", text)
    Image.new("RGB", (16, 16), (200, 100, 50)).save(path, pnginfo=meta)
    return path


def test_png_info_reads_a1111_parameters(engine, tmp_path):
    demo = build_blocks(engine, Translator("en", strict=True))
    read = endpoint(demo, "png_info")
    text, rows, message = read(str(_png(tmp_path / "a.png", A1111_TEXT)))
    assert text == A1111_TEXT and message == ""
    assert ["Prompt", "portrait of a woman, soft light"] in rows
    assert ["Negative prompt", "blurry, lowres"] in rows
    assert ["Steps", "20"] in rows and ["Size", "512x768"] in rows and ["Clip skip", "2"] in rows
    text, rows, message = read(str(_png(tmp_path / "b.png", None)))
    assert (text, rows, message) == ("", [], EN["pnginfo.none"])
    (tmp_path / "c.png").write_bytes(b"not an image at all")
    with pytest.raises(gr.Error) as info:
        read(str(tmp_path / "c.png"))
    assert info.value.message.startswith("Image: ")


def test_send_to_txt2img_fills_fields_and_switches_tab(engine):
    t = Translator("en", strict=True)
    out = make_send_to_txt2img(engine, t)(A1111_TEXT)
    values = dict(zip(PARAM_FIELDS, out[:-1]))
    assert values["prompt"] == "portrait of a woman, soft light"
    assert values["negative_prompt"] == "blurry, lowres"
    assert (values["steps"], values["cfg_scale"], values["seed"]) == (20, 6.5, 1234)
    assert (values["width"], values["height"], values["clip_skip"]) == (512, 768, 2)
    assert values["sampler"] == "DPM++ 2M Karras"
    assert out[-1].selected == "txt2img"
    # a Z-Image model has no DPM++ sampler: the field is left alone, with a warning
    engine.current = engine.entries[1]
    with pytest.warns(UserWarning, match="DPM\\+\\+ 2M Karras"):
        out = make_send_to_txt2img(engine, t)(A1111_TEXT)
    assert dict(zip(PARAM_FIELDS, out[:-1]))["sampler"] == gr.skip()


# -- Models tab ---------------------------------------------------------------------------------------

def test_models_table_and_refresh(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    table = next(b for b in demo.blocks.values() if isinstance(b, gr.Dataframe) and b.label == EN["models.found"])
    rows = table.value["data"]
    assert ["tiny-sd15", "Stable Diffusion 1.5", "single-file", "0123456789", "✅ supported"] in rows
    assert ["old", "—", "pickle", "", "⛔ pickle checkpoints are not loaded"] in rows
    summary, rows = endpoint(demo, "refresh_models")()
    assert engine.refreshes == 1 and summary == "4 model(s), 3 supported" and len(rows) == 4
    model_dd = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == EN["model.label"])
    assert [c[1] for c in model_dd.choices] == ["tiny-sd15", "tiny-zimage", "broken"]
    assert model_dd.value == "tiny-sd15"


def test_download_shows_progress_and_errors(engine):
    demo = build_blocks(engine, Translator("en", strict=True))
    download = endpoint(demo, "download_model")
    engine.gate.clear()
    gen = download(" Tongyi-MAI/Z-Image-Turbo ")
    seen = run_until(gen, lambda html: "<progress" in html)
    assert 'value="25"' in seen[-1] and "25% · 0.5 / 2.0 MB" in seen[-1]
    engine.gate.set()
    assert list(gen)[-1] == "Downloaded Tongyi-MAI/Z-Image-Turbo to /hf/models--Tongyi-MAI--Z-Image-Turbo"
    zh_download = endpoint(build_blocks(engine, Translator("zh", strict=True)), "download_model")
    with pytest.raises(gr.Error) as info:
        next(zh_download("nonsense"))
    assert info.value.message.startswith("下载失败：")


# -- over HTTP ----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_over_gradio_client(engine, tmp_path):
    from gradio_client import Client

    demo = build_blocks(engine, Translator("en", strict=True))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path),
                        analytics_enabled=False)
        gallery, infotext, status = client.predict(prompt="a face", steps=4, width=64, height=64, seed=11,
                                                   sampler="Euler", api_name="/generate")
        assert len(gallery) == 1 and "Seed: 11" in infotext and status.startswith("Done: 1 image(s)")
        with Image.open(gallery[0]["image"]) as im:
            assert im.size == (64, 64)
            assert im.info.get("parameters") == infotext  # the PNG a user downloads keeps its infotext
        assert client.predict(api_name="/status").startswith("🟢 Ready · tiny-sd15 [0123456789]")
        with pytest.raises(Exception, match="Width: must be a multiple of 8"):
            client.predict(prompt="x", width=100, api_name="/generate")
        client.predict(api_name="/interrupt")  # nothing running: a no-op, not an error
        client.predict("tiny-zimage", api_name="/switch_model")
        assert engine.current.name == "tiny-zimage"
        # the page was built for SD1.5: sampler=None gives the new family's default sampler
        gallery, infotext, _ = client.predict(prompt="z", width=64, height=64, sampler=None, steps=3,
                                              cfg_scale=0, api_name="/generate")
        assert "Sampler: Euler (flow match)" in infotext and "Steps: 3" in infotext
    finally:
        demo.close()


def _by_elem_id(demo: gr.Blocks, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_first_screen_without_a_model_says_what_to_do(engine, lang):
    """No usable model: the page opens on first steps (starter packs, an A1111 folder, a tiny model offline),
    not on an empty dropdown; the panel goes once a model exists."""
    from modules.ui import header

    kept = engine.entries
    engine.entries = [e for e in kept if not e.supported]  # only the unsupported pickle
    t = Translator(lang, strict=True)
    demo = build_blocks(engine, t)
    welcome = _by_elem_id(demo, "visage_welcome")
    assert welcome.visible is True
    assert "--models-dir" in t("welcome.text") and "make-tiny-model" in t("welcome.text")
    assert _by_elem_id(demo, "visage_get_models").value == t("welcome.get_models")
    assert header.welcome_update(engine).visible is True
    engine.entries = kept
    assert header.welcome_update(engine).visible is False
    assert _by_elem_id(build_blocks(engine, Translator(lang, strict=True)), "visage_welcome").visible is False


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_checking_pack_sizes_offline_says_one_clear_sentence(engine, lang):
    t = Translator(lang, strict=True)
    check = endpoint(build_blocks(engine, t), "plan_download")
    with pytest.raises(gr.Error) as info:
        check("sd15-cpu", "", "")
    text = info.value.message
    assert "python -m modules.cli download --pack sd15-cpu" in text and "\n" not in text and "Traceback" not in text
    assert ("下载" in text) if lang == "zh" else ("offline" in text.lower())


def test_a_piece_fetched_inside_a_generation_shows_as_its_progress(engine):
    """A missing TAESD fetched on demand reports a keyed phase with byte counts: the page says it in its
    language (not "step 1200000/9800000")."""
    from types import SimpleNamespace

    from modules.jobs import Progress
    from modules.loader.on_demand import Piece, fetch_phase
    from modules.ui import txt2img as page

    piece = Piece("TAESD", "madebyollin/taesd", ("config.json",), "python -m modules.cli download madebyollin/taesd")
    phase = fetch_phase(piece, 1_200_000, 9_800_000)
    job = SimpleNamespace(progress=Progress(phase, 1_200_000, 9_800_000))
    engine.queue_position = lambda _job: 0
    assert page.progress_text(Translator("en", strict=True), engine, job) == \
        "fetching TAESD (madebyollin/taesd) 1.2/9.8 MB"
    assert page.progress_text(Translator("zh", strict=True), engine, job) == \
        "正在获取 TAESD（madebyollin/taesd）1.2/9.8 MB"


def test_img2img_and_inpaint_tabs_send_the_photo_mask_and_options(engine):
    """img2img sends the photo and the denoise/resize options; Inpaint turns what was painted in the image
    editor into the mask (white = redo) with its options; no photo or no mask is a message, not a job."""
    from modules.ui import img2img

    demo = build_blocks(engine, Translator("en", strict=True))
    photo = Image.new("RGB", (64, 48), (120, 90, 60))
    final = list(endpoint(demo, "img2img")(photo, None, "a face", "", "", "Euler", 4, 7.0, 5, 1, 1, 0.4, 1))[-1]
    assert final[0], "no images"
    sent = engine.submitted[-1]
    assert sent.init_image.size == (64, 48) and sent.mask is None
    assert (sent.denoising_strength, sent.resize_mode, sent.prompt) == (0.4, 1, "a face")

    layer = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (10, 10, 30, 20))
    editor = {"background": photo, "layers": [layer], "composite": photo}
    list(endpoint(demo, "inpaint")(editor, None, "a face", "", "", "Euler", 4, 7.0, 5, 1, 1, 0.6, 0,
                                   8, True, 16, 2, True))
    sent = engine.submitted[-1]
    assert sent.mask.getbbox() == (10, 10, 30, 20) and sent.mask.getpixel((15, 15)) == 255
    assert (sent.mask_blur, sent.inpaint_full_res, sent.inpaint_full_res_padding, sent.inpainting_fill,
            sent.inpainting_mask_invert) == (8, True, 16, 2, True)
    count = len(engine.submitted)
    with pytest.raises(gr.Error, match="Paint over"):
        next(endpoint(demo, "inpaint")({"background": photo, "layers": []}, None, "x", "", "", "Euler", 4, 7.0,
                                       5, 1, 1, 0.6, 0))
    with pytest.raises(gr.Error, match="Upload a photo"):
        next(endpoint(demo, "img2img")(None, None, "x", "", "", "Euler", 4, 7.0, 5, 1, 1, 0.6, 0))
    assert len(engine.submitted) == count
    assert img2img.editor_mask({"background": photo, "layers": [Image.new("RGBA", (64, 48))]})[1] is None


def test_send_the_selected_txt2img_image_to_inpaint(engine, tmp_path):
    from modules.ui import picked_image

    a, b = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    path = tmp_path / "b.png"
    b.save(path)
    assert picked_image([(a, None), (str(path), None)], 1).getpixel((0, 0)) == (0, 0, 255)
    assert picked_image([(a, None)], 5).getpixel((0, 0)) == (255, 0, 0)  # out of range: the first
    assert picked_image([], 0) is None


def _click_fn(demo: gr.Blocks, elem_id: str):
    button = _by_elem_id(demo, elem_id)
    return next(f.fn for f in demo.fns.values() if any(t[0] == button._id for t in f.targets))


def test_png_info_sends_the_photo_and_its_prompts_to_img2img_and_inpaint(engine, tmp_path):
    demo = build_blocks(engine, Translator("en", strict=True))
    info = PngInfo()
    text = "a portrait\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 32x24"
    info.add_text("parameters", text)
    path = tmp_path / "in.png"
    Image.new("RGB", (32, 24), "green").save(path, pnginfo=info)
    for elem_id, tab in (("pnginfo_send_img2img", "img2img"), ("pnginfo_send_inpaint", "inpaint")):
        image, prompt, negative, tabs = _click_fn(demo, elem_id)(str(path), text)
        assert image.size == (32, 24) and (prompt, negative) == ("a portrait", "blurry")
        assert tabs.selected == tab
    nothing = _click_fn(demo, "pnginfo_send_img2img")(None, "")  # no photo: nothing changes, no tab switch
    assert not any(isinstance(x, (Image.Image, gr.Tabs)) for x in nothing)
