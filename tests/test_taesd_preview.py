"""TAESD: where its weights are found, its scaling conventions, live previews during a generation (txt2img
callback and through the engine's job progress) and the fast TAESD final decode."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fixtures_models import make_folders
from modules.engine import Engine
from modules.errors import InvalidRequest, MissingComponent
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.generation.txt2img import txt2img
from modules.jobs import JobContext
from modules.settings import Settings
from modules.taesd import (
    TaeDecoder, decode_latents, find_taesd, load_taesd, random_taesd, tae_input, tae_output,
)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    folders = make_folders(tmp_path_factory.mktemp("taesd"))
    install_tiny_clip_tokenizer(folders)
    make_tiny_model("sd15", "diffusers", folders.checkpoints / "tiny15")
    random_taesd(Family.SD15, seed=0).save_pretrained(str(folders.vae_approx / "taesd"))
    return folders


class RecordingContext:
    """The JobContext surface txt2img uses, recording every report."""

    def __init__(self):
        self.reports: list[tuple] = []
        self.cancelled = False

    def report(self, phase, step=0, total=0, preview=None):
        self.reports.append((phase, step, total, preview))

    def check_cancelled(self):
        pass


def test_scaling_conventions_in_one_place():
    class Config:
        scaling_factor = 0.5
        shift_factor = 0.25

    x = torch.tensor([1.0, -2.0])
    assert torch.allclose(tae_input(x, Config), torch.tensor([2.25, -3.75]))
    assert torch.allclose(tae_input(x, object()), x)  # taesd/taesdxl: latents as the denoiser sees them
    assert torch.allclose(tae_output(torch.tensor([-1.0, 0.0, 1.0, 3.0])), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    tae = random_taesd(Family.SD15)
    images = decode_latents(tae, torch.randn(2, 4, 8, 8))
    assert images.shape == (2, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    # the same as diffusers' own decode mapped from [-1, 1]
    lat = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        ref = (tae.decode(lat).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(decode_latents(tae, lat), ref, atol=1e-6)
    assert random_taesd(Family.ZIMAGE).config.latent_channels == 16


def test_found_in_vae_approx_and_hf_cache(env, tmp_path):
    assert find_taesd(Family.SD15, env) == env.vae_approx / "taesd"
    assert load_taesd(Family.SD15, env).config.latent_channels == 4
    other = make_folders(tmp_path / "other")
    hf = tmp_path / "hf"
    snap = hf / "models--madebyollin--taesd" / "snapshots" / "abc"
    random_taesd(Family.SD15).save_pretrained(str(snap))
    assert find_taesd(Family.SD15, other, hf) == snap
    with pytest.raises(MissingComponent, match="madebyollin/taesdxl"):
        load_taesd(Family.SDXL, other, hf)


def _pipe(env):
    from modules.loader import load_pipeline
    from modules.registry.scan import identify_path

    pipe = load_pipeline(identify_path(env.checkpoints / "tiny15", "tiny15"), folders=env)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_previews_arrive_every_n_steps(env):
    pipe = _pipe(env)
    tae = TaeDecoder(random_taesd(Family.SD15))
    ctx = RecordingContext()
    req = GenerationRequest(prompt="a face", steps=5, width=64, height=64, seed=1, sampler="Euler", cfg_scale=1.0,
                            preview_every=2, batch_count=2)
    out = txt2img(pipe, Family.SD15, req, ctx, device=CPU, tae=tae)
    denoising = [(step, preview) for phase, step, _total, preview in ctx.reports if phase == "denoising"]
    assert [s for s, _ in denoising] == list(range(1, 11))
    with_preview = [s for s, p in denoising if p is not None]
    assert with_preview == [2, 4, 7, 9]  # every 2 steps within each batch, not on a batch's last step
    assert all(isinstance(p, Image.Image) for _, p in denoising if p is not None)
    assert len(out.images) == 2 and out.images[0].size == (64, 64)  # full VAE by default
    ctx_off = RecordingContext()
    txt2img(pipe, Family.SD15, GenerationRequest(**{**req.to_dict(), "preview_every": 0}), ctx_off, device=CPU, tae=tae)
    assert all(p is None for *_, p in ctx_off.reports)


def test_taesd_final_decode(env):
    pipe = _pipe(env)
    tae = TaeDecoder(random_taesd(Family.SD15))
    req = dict(prompt="a face", steps=2, width=64, height=64, seed=3, sampler="Euler", cfg_scale=1.0)
    fast = txt2img(pipe, Family.SD15, GenerationRequest(**req, decoder="taesd"), RecordingContext(), device=CPU,
                   tae=tae)
    with torch.no_grad():
        latents = pipe(prompt="a face", height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                       generator=[torch.Generator().manual_seed(3)], output_type="latent").images
    expected = tae.decode(latents)[0]
    # the tiny VAE downsamples 2x, TAESD upsamples 8x: a TAESD-decoded tiny image is 4x larger
    assert fast.images[0].size == expected.size == (256, 256)
    assert list(fast.images[0].getdata()) == list(expected.getdata())


@pytest.fixture
def engine(env, tmp_path):
    eng = Engine(Settings(models_dir=env.models, outputs_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                          hf_cache=tmp_path / "no-hf", ckpt_cache=0, embed_cache_persist=False))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def test_previews_through_the_engine_job_progress(engine, monkeypatch):
    seen = []
    original = JobContext.report

    def spy(self, phase, step=0, total=0, preview=None):
        seen.append((phase, step, preview))
        original(self, phase, step, total, preview)

    monkeypatch.setattr(JobContext, "report", spy)
    job = engine.generate(GenerationRequest(model="tiny15", prompt="a face", steps=3, width=64, height=64,
                                            preview_every=1, save=False))
    result = job.wait(120)
    previews = [(step, p) for phase, step, p in seen if phase == "denoising" and p is not None]
    assert [s for s, _ in previews] == [1, 2]
    assert isinstance(job.progress.preview, Image.Image)  # what the page polls
    assert result.images[0].size == (64, 64)


def test_missing_taesd(engine, env, tmp_path):
    engine.folders.vae_approx.rename(tmp_path / "moved")
    try:
        ok = engine.generate(GenerationRequest(model="tiny15", prompt="x", steps=2, width=64, height=64,
                                               preview_every=1, save=False)).wait(120)
        assert ok.images  # previews are skipped, the image still comes
        with pytest.raises(InvalidRequest, match="'taesd' needs TAESD weights"):  # refused before queueing
            engine.generate(GenerationRequest(model="tiny15", prompt="x", steps=2, width=64, height=64,
                                              decoder="taesd", save=False))
    finally:
        (tmp_path / "moved").rename(engine.folders.vae_approx)


def test_page_generate_streams_previews_and_passes_the_run_options(engine):
    """The txt2img click (backend, decoder, preview interval first) shows TAESD previews in the gallery
    before the final image, and a TAESD final decode is recorded in the infotext."""
    from modules.ui import txt2img as page
    from modules.ui.i18n import Translator

    engine.switch_model("tiny15").wait(120)
    click = page.with_run_options(page.make_generate(engine, Translator("en"), poll_s=0.0), postprocess=False)
    fields = ["a face", "", "Euler", 4, 7.0, 64, 64, 5, 1, 1, 1]
    updates = list(click("diffusers", "taesd", 1, *fields, [], None, []))
    galleries = [u[0] for u in updates if isinstance(u[0], list)]
    assert len(galleries) >= 2, "at least one preview, then the final images"
    assert all(isinstance(im, Image.Image) for g in galleries for im in g)
    final_infotext = updates[-1][1]
    assert "Decoder: TAESD" in final_infotext and "Seed: 5" in final_infotext
    # preview interval 0 (off): only the final images reach the gallery
    updates = list(click("auto", "vae", 0, *fields, [], None, []))
    assert len([u for u in updates if isinstance(u[0], list)]) == 1
    assert "Decoder" not in updates[-1][1]


def test_cpu_previews_are_decoded_small():
    """On a CPU a preview of a 512x512 image decodes 32x32 latents (a 256x256 preview): a fifth of the cost."""
    from modules.taesd import CPU_PREVIEW_MAX_SIDE, preview_latents

    latents = torch.randn(1, 4, 64, 96)  # a 512x768 image: pooled 3x3 -> a 176x256 preview
    small = preview_latents(latents, CPU_PREVIEW_MAX_SIDE)
    assert small.shape == (1, 4, 22, 32)
    assert torch.allclose(small[0, :, 0, 0], latents[0, :, :3, :3].mean(dim=(1, 2)), atol=1e-6)
    assert preview_latents(torch.randn(1, 4, 64, 64), CPU_PREVIEW_MAX_SIDE).shape == (1, 4, 32, 32)
    assert preview_latents(latents, None) is latents
    assert preview_latents(torch.randn(1, 4, 32, 32), CPU_PREVIEW_MAX_SIDE).shape == (1, 4, 32, 32)
    assert preview_latents(torch.randn(1, 4, 128, 128), CPU_PREVIEW_MAX_SIDE).shape == (1, 4, 32, 32)
