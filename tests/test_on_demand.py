"""Missing pieces fetched on demand, and tiny single files that generate with nothing else on disk.

- ``make-tiny-model --format single-file`` -> ``generate``, and a LoRA merge of a tiny diffusers folder saved as
  a single file -> ``generate``: the CLI as a user runs it, offline, in an empty models folder.
- The CLIP tokenizer and TAESD fetched from a local stand-in for the Hub (tests/hub_server.py) inside the job
  that needs them: the files land where the finders look, the job's phase shows the fetch, generation works.
- Offline (HF_HUB_OFFLINE) or an unreachable Hub: one sentence saying what is missing, where it goes, which
  command fetches it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO_ROOT
from fixtures_models import make_folders
from hub_server import HubServer, hub_env
from modules.checkpoints.header import read_header
from modules.checkpoints.single_file import TOKENIZER_KEY
from modules.engine import Engine
from modules.errors import InvalidRequest, MissingComponent
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.jobs import JobContext
from modules.loader.on_demand import HUB
from modules.settings import Settings
from modules.taesd import find_taesd, random_taesd

SHARED_CLIP = REPO_ROOT.parent / "shared" / "assets" / "clip-tokenizer"
TINY_SIZE = dict(steps=2, width=64, height=64, seed=3, save=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def fresh_hub_status():
    """The process-wide memory of a failed fetch must not leak from one test into another."""
    HUB.succeeded()
    yield
    HUB.succeeded()


def cli(*args, check=True, **env):
    proc = subprocess.run([sys.executable, "-m", "modules.cli", *map(str, args)], cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def tiny_lora(path: Path) -> Path:
    """A kohya LoRA on two attention projections of the tiny SD1.5 U-Net (64 channels there) and one of its
    text encoder (32)."""
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for key, width in (("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 64),
                       ("lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", 64),
                       ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 32)):
        sd[f"{key}.lora_down.weight"] = torch.randn(4, width, generator=gen) * 0.3
        sd[f"{key}.lora_up.weight"] = torch.randn(width, 4, generator=gen) * 0.3
        sd[f"{key}.alpha"] = torch.tensor(2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def without_tokenizer(src: Path, out: Path) -> Path:
    """``src`` with Visage's embedded tokenizer taken out of its header: like an A1111 file or a merge."""
    meta = {k: v for k, v in read_header(src).metadata.items() if k != TOKENIZER_KEY}
    save_file(load_file(str(src)), str(out), metadata=meta)
    return out


# --------------------------------------------------------------------------------- the CLI, offline

@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_single_file_generates_right_after_make_tiny_model(tmp_path, family):
    models = tmp_path / "models"
    made = cli("make-tiny-model", "--family", family, "--format", "single-file",
               "--out", models / "Stable-diffusion" / "x.safetensors").stdout.strip()
    assert Path(made) == models / "Stable-diffusion" / "x.safetensors"
    out = cli("generate", "--models-dir", models, "--cache-dir", tmp_path / "cache", "--model", "x",
              "--prompt", "a portrait", "--steps", 2, "--width", 64, "--height", 64, "--seed", 1,
              "--out", tmp_path / "out").stdout.split()
    assert len(out) == 1 and Path(out[0]).is_file()
    assert not (models / "tokenizers").exists()  # it used its own tokenizer: nothing installed beside it


def test_merged_single_file_of_a_tiny_diffusers_model_generates(tmp_path):
    models = tmp_path / "models"
    ckpt = models / "Stable-diffusion"
    common = ("--models-dir", models, "--cache-dir", tmp_path / "cache")
    cli("make-tiny-model", "--family", "sd15", "--format", "diffusers", "--out", ckpt / "base")
    tiny_lora(models / "Lora" / "face.safetensors")
    cli("merge-lora", *common, "--base", "base", "--lora", "face:0.8", "--out", "merged", "--format", "single-file",
        "--dtype", "fp32")
    assert (ckpt / "merged.safetensors").is_file()
    out = cli("generate", *common, "--model", "merged", "--prompt", "a portrait", "--steps", 2, "--width", 64,
              "--height", 64, "--out", tmp_path / "out").stdout.split()
    assert len(out) == 1 and Path(out[0]).is_file()
    assert not (models / "tokenizers").exists()  # the merge base's own tokenizer, no fetch-tokenizer

    # without its base the merged file needs the CLIP tokenizer: offline, one sentence says so
    (ckpt / "base").rename(tmp_path / "base-moved")
    proc = cli("generate", *common, "--model", "merged", "--prompt", "x", "--steps", 2, "--width", 64,
               "--height", 64, "--out", tmp_path / "out", check=False)
    assert proc.returncode != 0
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, proc.stderr[-2000:]
    for part in ("CLIP tokenizer not found", str(models / "tokenizers" / "clip-vit-large-patch14"),
                 "`python -m modules.cli fetch-tokenizer`", "HF_HUB_OFFLINE"):
        assert part in error[0]


# ----------------------------------------------------------------------------- on demand, in-process

def clip_files() -> dict[str, bytes]:
    """The real CLIP tokenizer when ../shared/assets has it (49,408 tokens: it fits the tiny text encoders),
    else the tiny one (what a fresh checkout can make)."""
    if SHARED_CLIP.is_dir():
        return {n: (SHARED_CLIP / n).read_bytes() for n in ("vocab.json", "merges.txt")}
    from modules.tiny import tiny_clip_tokenizer_files

    return {n: text.encode() for n, text in tiny_clip_tokenizer_files().items()}


def taesd_files(tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "taesd-src"
    random_taesd(Family.SD15, seed=1).save_pretrained(str(folder))
    return {n: (folder / n).read_bytes() for n in ("config.json", "diffusion_pytorch_model.safetensors")}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny SD1.5 diffusers folder and a tiny SD1.5 single file without an embedded tokenizer."""
    from modules.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("on-demand-src")
    folder = make_tiny_model("sd15", "diffusers", root / "tiny15")
    bare = without_tokenizer(make_tiny_model("sd15", "single-file", root / "x.safetensors"), root / "bare.safetensors")
    return folder, bare


@pytest.fixture
def engine_for(tmp_path, tiny_files):
    """``make() -> Engine`` on a fresh models/ tree holding the tiny diffusers model and the bare single file."""
    import shutil

    engines = []
    folder, bare = tiny_files

    def make() -> Engine:
        folders = make_folders(tmp_path)
        if not (folders.checkpoints / "tiny15").exists():
            shutil.copytree(folder, folders.checkpoints / "tiny15")
            shutil.copyfile(bare, folders.checkpoints / "bare.safetensors")
        eng = Engine(Settings(models_dir=folders.models, outputs_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                              hf_cache=tmp_path / "no-hf", ckpt_cache=0, embed_cache_persist=False))
        eng.start(load_initial=False)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        eng.close()


@pytest.fixture
def phases(monkeypatch):
    """Every phase a job reported, in order."""
    seen: list[tuple[str, int, int]] = []
    original = JobContext.report

    def spy(self, phase, step=0, total=0, preview=None):
        seen.append((phase, step, total))
        original(self, phase, step, total, preview)

    monkeypatch.setattr(JobContext, "report", spy)
    return seen


def test_taesd_is_fetched_inside_the_job_that_needs_it(engine_for, phases, monkeypatch, tmp_path):
    hub = HubServer({"madebyollin/taesd": taesd_files(tmp_path)})
    with hub:
        hub_env(monkeypatch, hub)
        engine = engine_for()
        assert find_taesd(Family.SD15, engine.folders, tmp_path / "no-hf") is None
        prepared = engine.prepare(GenerationRequest(model="tiny15", prompt="a face", decoder="taesd", **TINY_SIZE))
        assert hub.requests == []  # accepting the request asked nothing of the network
        result = engine.generate(prepared).wait(120)
    assert result.images[0].size == (256, 256)  # TAESD decoded (the tiny VAE would give 64x64)
    folder = engine.folders.vae_approx / "taesd"
    assert find_taesd(Family.SD15, engine.folders, tmp_path / "no-hf") == folder
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    fetching = [(p, done, total) for p, done, total in phases if p.startswith("fetching TAESD (madebyollin/taesd)")]
    assert fetching and fetching[-1][1] == fetching[-1][2] > 0
    assert fetching[-1][0].endswith(" MB")
    # the next generation finds it on disk: nothing fetched again
    served = len(hub.gets("diffusion_pytorch_model.safetensors"))
    engine.generate(GenerationRequest(model="tiny15", prompt="a face", decoder="taesd", **TINY_SIZE)).wait(120)
    assert len(hub.gets("diffusion_pytorch_model.safetensors")) == served


def test_previews_fetch_taesd_too(engine_for, phases, monkeypatch, tmp_path):
    hub = HubServer({"madebyollin/taesd": taesd_files(tmp_path)})
    with hub:
        hub_env(monkeypatch, hub)
        job = engine_for().generate(GenerationRequest(model="tiny15", prompt="a face", preview_every=1, **TINY_SIZE))
        job.wait(120)
    assert any(p.startswith("fetching TAESD") for p, *_ in phases)
    assert job.progress.preview is not None  # a live preview arrived


def test_taesd_offline_is_one_clear_sentence(engine_for, phases, caplog):
    engine = engine_for()
    with pytest.raises(InvalidRequest) as info:  # refused before queueing
        engine.prepare(GenerationRequest(model="tiny15", prompt="x", decoder="taesd", **TINY_SIZE))
    text = str(info.value)
    for part in ("madebyollin/taesd", str(engine.folders.vae_approx / "taesd"),
                 "`python -m modules.cli download madebyollin/taesd`", "HF_HUB_OFFLINE"):
        assert part in text
    # previews: off, said once in the log, and the image still comes
    with caplog.at_level("INFO", logger="modules.engine.prepare"):
        result = engine.generate(GenerationRequest(model="tiny15", prompt="x", preview_every=1, **TINY_SIZE)).wait(120)
    assert result.images and not any(p.startswith("fetching") for p, *_ in phases)
    assert len([r for r in caplog.records if "no live preview" in r.getMessage()]) == 1


def test_clip_tokenizer_is_fetched_inside_the_loading_job(engine_for, phases, monkeypatch):
    hub = HubServer({"openai/clip-vit-large-patch14": clip_files()})
    with hub:
        hub_env(monkeypatch, hub)
        engine = engine_for()
        result = engine.generate(GenerationRequest(model="bare", prompt="a face", **TINY_SIZE)).wait(120)
    assert result.images[0].size == (64, 64)
    own = engine.folders.tokenizers / "clip-vit-large-patch14"
    assert json.loads((own / "vocab.json").read_text()) == json.loads(clip_files()["vocab.json"])
    assert (own / "merges.txt").is_file() and (own / "tokenizer_config.json").is_file()
    assert [p.name for p in engine.folders.tokenizers.iterdir()] == ["clip-vit-large-patch14"]  # no staging left
    assert any(p.startswith("fetching CLIP tokenizer (openai/clip-vit-large-patch14)") for p, *_ in phases)


def test_clip_tokenizer_offline_is_one_clear_sentence(engine_for):
    engine = engine_for()
    job = engine.generate(GenerationRequest(model="bare", prompt="a face", **TINY_SIZE))
    with pytest.raises(MissingComponent) as info:
        job.wait(120)
    text = str(info.value)
    for part in ("CLIP tokenizer not found", str(engine.folders.tokenizers / "clip-vit-large-patch14"),
                 "`python -m modules.cli fetch-tokenizer`", "HF_HUB_OFFLINE"):
        assert part in text
    assert info.value.key == "missing.not_fetched"


def test_unreachable_hub_is_said_and_remembered(engine_for, monkeypatch):
    with HubServer({}) as hub:
        pass
    hub_env(monkeypatch, hub)  # its port: nothing listens there any more
    engine = engine_for()
    # decoder=taesd is accepted while the Hub is not known to be unreachable (no network call to decide) ...
    job = engine.generate(GenerationRequest(model="tiny15", prompt="x", decoder="taesd", **TINY_SIZE))
    with pytest.raises(MissingComponent) as info:
        job.wait(120)
    assert "madebyollin/taesd" in str(info.value) and "not fetched automatically" in str(info.value)
    assert not (engine.folders.vae_approx / "taesd").exists() or not any((engine.folders.vae_approx / "taesd").iterdir())
    # ... and once it failed, the next requests are refused at once with the same sentence
    with pytest.raises(InvalidRequest, match="cannot download madebyollin/taesd"):
        engine.prepare(GenerationRequest(model="tiny15", prompt="x", decoder="taesd", **TINY_SIZE))


def test_a_tiny_single_file_carries_its_tokenizer(tmp_path):
    from modules.tiny import make_tiny_model

    path = make_tiny_model("sdxl", "single-file", tmp_path / "x")
    files = json.loads(read_header(path).metadata[TOKENIZER_KEY])
    assert sorted(files) == ["merges.txt", "vocab.json"]
    configs = json.loads(read_header(path).metadata["visage.configs"])
    assert configs["text_encoder"]["vocab_size"] == configs["text_encoder_2"]["vocab_size"] == 49408
