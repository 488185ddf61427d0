"""The ONNX Runtime backend: same samplers, seeds and embedding seam as diffusers; ORT fp32 vs torch within
the documented tolerance (docs/edge.md); edge packages through the engine (backend selection, cache, LoRAs)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fixtures_models import make_folders
from modules.edge.build import EdgeBuildOptions, build_edge
from modules.edge.runtime import EdgePipeline, choose_providers
from modules.engine import Engine
from modules.errors import InvalidRequest
from modules.families import Family
from modules.generation.encoding import encode_prompts
from modules.generation.params import GenerationRequest
from modules.generation.samplers import make_scheduler
from modules.loader import load_pipeline
from modules.registry.scan import identify_path
from modules.settings import Settings
from modules.taesd import decode_latents, random_taesd

#: ORT fp32 vs torch fp32: |Δ latents| <= RTOL * max|latents| + ATOL (documented in docs/edge.md)
RTOL, ATOL = 1e-4, 1e-4
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny SD1.5, its fp32 edge package (built from the very same weights) and the torch pipeline."""
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    folders = make_folders(tmp_path_factory.mktemp("edge-runtime"))
    install_tiny_clip_tokenizer(folders)
    path = make_tiny_model("sd15", "diffusers", folders.checkpoints / "tiny15")
    random_taesd(Family.SD15, seed=0).save_pretrained(str(folders.vae_approx / "taesd"))
    entry = identify_path(path, "tiny15")
    tae = random_taesd(Family.SD15, seed=0)
    package = build_edge(load_pipeline(entry, folders=folders), entry, folders, "fp32",
                         EdgeBuildOptions(quantize="none"), taesd=tae)
    torch_pipe = load_pipeline(entry, folders=folders)
    torch_pipe.set_progress_bar_config(disable=True)
    return folders, package, torch_pipe, tae


def _latents(pipe, embeds, sampler: str, cfg: float, seed: int, steps: int = 3, n: int = 1):
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    kwargs = dict(prompt_embeds=embeds["prompt_embeds"], height=64, width=64, num_inference_steps=steps,
                  guidance_scale=cfg, num_images_per_prompt=n, output_type="latent",
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(n)])
    if cfg > 1:
        kwargs["negative_prompt_embeds"] = embeds["negative_prompt_embeds"]
    with torch.no_grad():
        return pipe(**kwargs).images


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_text_encoder_matches_torch(env, clip_skip):
    _, package, torch_pipe, _ = env
    edge = EdgePipeline(package)
    ours = edge.encode_prompts("a portrait of a woman", "blurry", True, clip_skip)
    ref = encode_prompts(torch_pipe, Family.SD15, "a portrait of a woman", "blurry", do_cfg=True,
                         clip_skip=clip_skip, device=CPU)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        assert ours[key].shape == ref[key].shape
        assert (ours[key] - ref[key]).abs().max() < 1e-4
    no_cfg = edge.encode_prompts("a portrait of a woman", "blurry", False, clip_skip)
    assert no_cfg["negative_prompt_embeds"] is None
    assert torch.allclose(no_cfg["prompt_embeds"], ours["prompt_embeds"], atol=1e-5)


@pytest.mark.parametrize("sampler,cfg,n", [("Euler", 1.0, 1), ("DPM++ 2M Karras", 5.0, 2), ("Euler a", 1.0, 1),
                                           ("LCM", 1.0, 1)])
def test_ort_fp32_matches_torch(env, sampler, cfg, n):
    _, package, torch_pipe, tae = env
    edge = EdgePipeline(package)
    embeds = encode_prompts(torch_pipe, Family.SD15, "a photo", "ugly", do_cfg=cfg > 1, clip_skip=1, device=CPU)
    ref = _latents(torch_pipe, embeds, sampler, cfg, seed=11, n=n)
    ours = _latents(edge, embeds, sampler, cfg, seed=11, n=n)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= RTOL * ref.abs().max() + ATOL
    other = _latents(edge, embeds, sampler, cfg, seed=12, n=n)
    assert (other - ref).abs().max() > 0.1  # the seed matters: the comparison is not vacuous
    # the ONNX TAESD decoder equals the torch one within one 8-bit level
    import numpy as np
    onnx_img = np.asarray(edge.decoder("taesd").decode(ours)[0], dtype=np.int16)
    torch_img = (decode_latents(tae, ref)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(onnx_img - torch_img).max() <= 1


def test_providers():
    assert choose_providers(None) == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def engine(env, tmp_path_factory):
    folders, _, _, _ = env
    eng = Engine(Settings(models_dir=folders.models, outputs_dir=tmp_path_factory.mktemp("out"),
                          cache_dir=folders.cache, hf_cache=folders.cache / "no-hf", ckpt_cache=0,
                          embed_cache_persist=False, onnx_threads=1))
    eng.start(load_initial=False)
    yield eng
    eng.close()


def test_engine_runs_edge_packages_on_onnx(engine, env):
    _, _, torch_pipe, _ = env
    names = {e.name: e for e in engine.models(refresh=True)}
    assert names["edge/fp32"].format == "edge" and names["edge/fp32"].supported
    req = dict(model="edge/fp32", prompt="a portrait", seed=5, width=64, height=64, steps=2, sampler="Euler",
               cfg_scale=1.0, save=False)
    result = engine.generate(GenerationRequest(**req)).wait(120)
    assert isinstance(engine.manager.current.pipe, EdgePipeline)
    assert len(result.images) == 1 and isinstance(result.images[0], Image.Image)
    hits = engine.cache_stats().hits
    again = engine.generate(GenerationRequest(**req)).wait(120)
    assert engine.cache_stats().hits == hits + 1  # the embedding cache seam is used
    assert list(again.images[0].getdata()) == list(result.images[0].getdata())  # same seed, same pixels
    assert "Model: edge/fp32" in result.infotexts[0]


def test_backend_selection_and_loras_are_checked_at_submit(engine):
    base = dict(prompt="x", width=64, height=64, steps=1, save=False)
    with pytest.raises(InvalidRequest, match="onnx backend"):
        engine.generate(GenerationRequest(model="edge/fp32", backend="diffusers", **base))
    with pytest.raises(InvalidRequest, match="build-edge"):
        engine.generate(GenerationRequest(model="tiny15", backend="onnx", **base))
    with pytest.raises(InvalidRequest, match="merged into edge packages"):
        engine.generate(GenerationRequest(model="edge/fp32", loras=[("some-lora", 1.0)], **base))
    with pytest.raises(InvalidRequest, match="backend"):
        engine.generate(GenerationRequest(model="tiny15", backend="tensorflow", **base))
    # the diffusers model still runs on diffusers with backend auto
    out = engine.generate(GenerationRequest(model="tiny15", **base)).wait(120)
    assert out.images and not isinstance(engine.manager.current.pipe, EdgePipeline)
