"""Model loading: per-family configs, single-file layouts, tokenizer/companion lookup and the errors."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fixtures_models import entry_for, make_folders, tiny_folders, tiny_models  # noqa: F401 (fixtures)
from modules.checkpoints import convert, layouts
from modules.checkpoints.header import read_header
from modules.checkpoints.single_file import TOKENIZER_KEY, save_single_file
from modules.errors import MissingComponent, ModelLoadError, ModelNotFound, UnsupportedModel
from modules.families import Family
from modules.loader import CONFIG_ROOT, assemble_config, checked_header, find_zimage_companion, load_pipeline
from modules.loader.tokenizers import (
    BPE_FILE_NAME, CLIP_MERGE_COUNT, build_clip_tokenizer_from_wheel, bytes_to_unicode, find_clip_tokenizer,
    install_clip_tokenizer,
)
from modules.tiny.components import tiny_pipeline
from modules.tiny.tokenizers import learn_clip_merges, write_tiny_clip_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "assets" / "clip-tokenizer"
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def load(path, family, fmt, folders, hf_cache=None):
    return load_pipeline(entry_for(path, family, fmt), folders=folders, hf_cache=hf_cache or folders.cache / "hf")


def run_once(pipe, family) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    extra = {"max_sequence_length": 32} if family == "zimage" else {}
    return pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0), **extra).images


# ------------------------------------------------------------------------------ real-size configs (meta)

PARAMS = [  # released models' parameter counts
    ("sd15", "unet", 859_520_964), ("sd15", "vae", 83_653_863), ("sd15", "text_encoder", 123_060_480),
    ("sdxl", "unet", 2_567_463_684), ("sdxl", "vae", 83_653_863), ("sdxl", "text_encoder", 123_060_480),
    ("sdxl", "text_encoder_2", 694_659_840), ("zimage", "transformer", 6_154_908_736),
    ("zimage", "vae", 83_819_683), ("zimage", "text_encoder", 4_022_468_096),
]


def meta_model(family: str, component: str):
    """A real-size component built from modules/loader/configs on the meta device (no memory used)."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    folder = CONFIG_ROOT / family / component
    config = json.loads((folder / "config.json").read_text())
    with init_empty_weights():
        if "_class_name" in config:
            cls = getattr(diffusers, config["_class_name"])
            return cls.from_config(cls.load_config(str(folder)))
        te_config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        return getattr(transformers, "Qwen3Model" if family == "zimage" else config["architectures"][0])(te_config)


@pytest.mark.parametrize("family,component,expected", PARAMS)
def test_real_configs_have_the_released_parameter_counts(family, component, expected):
    model = meta_model(family, component)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(expected, rel=1e-3)


def test_config_folders_are_complete():
    for family, parts in {"sd15": ["unet", "vae", "text_encoder", "tokenizer", "scheduler"],
                          "sdxl": ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                   "scheduler"],
                          "zimage": ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"]}.items():
        index = json.loads((CONFIG_ROOT / family / "model_index.json").read_text())
        for part in parts:
            assert index[part][0] is not None, (family, part)
            assert any((CONFIG_ROOT / family / part).glob("*.json")), (family, part)
        assert not list((CONFIG_ROOT / family).rglob("vocab.json"))  # vocabularies are found, not shipped


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_full_size_unet_and_clip_mapping_round_trips(family):
    """diffusers -> original (ours) -> diffusers (diffusers' converter) restores every real-size key and shape."""
    from diffusers.loaders import single_file_utils as ref

    unet = meta_model(family, "unet")
    state = unet.state_dict()
    original = {layouts.UNET_PREFIX + k: v for k, v in convert.unet_to_original(state, dict(unet.config)).items()}
    assert _shapes(ref.convert_ldm_unet_checkpoint(original, dict(unet.config))) == _shapes(state)
    clip = meta_model(family, "text_encoder").state_dict()
    prefix = layouts.SD15_CLIP_PREFIX if family == "sd15" else layouts.SDXL_CLIP_PREFIX
    back = ref.convert_ldm_clip_checkpoint({prefix + k: v for k, v in convert.clip_to_original(clip, {}).items()})
    assert {k.removeprefix("text_model."): s for k, s in _shapes(back).items()} == _shapes(clip)


def test_full_size_vae_openclip_and_zimage_mapping_round_trip():
    from diffusers.loaders import single_file_utils as ref

    vae = meta_model("zimage", "vae")
    state = vae.state_dict()
    original = {"vae." + k: v for k, v in convert.vae_to_original(state, dict(vae.config)).items()}
    assert _shapes(ref.convert_ldm_vae_checkpoint(original, dict(vae.config))) == _shapes(state)

    te2 = meta_model("sdxl", "text_encoder_2")
    state = te2.state_dict()
    original = {layouts.SDXL_OPENCLIP_PREFIX + k: v for k, v in convert.openclip_to_original(state, {}).items()}
    assert original[layouts.SDXL_OPENCLIP_PREFIX + "transformer.resblocks.31.attn.in_proj_weight"].shape == (3840, 1280)
    back = ref.convert_open_clip_checkpoint(te2, original, prefix=layouts.SDXL_OPENCLIP_PREFIX)
    assert _shapes(back) == _shapes(state)

    dit = meta_model("zimage", "transformer")
    state = dit.state_dict()
    original = {layouts.DIT_PREFIX + k: v for k, v in convert.zimage_dit_to_original(state, {}).items()}
    assert original[layouts.DIT_PREFIX + "layers.29.attention.qkv.weight"].shape == (3 * 3840, 3840)
    assert _shapes(ref.convert_z_image_transformer_checkpoint_to_diffusers(dict(original))) == _shapes(state)


# ---------------------------------------------------------------------------------------------- errors

def test_missing_file_is_model_not_found(tiny_folders, tmp_path):
    with pytest.raises(ModelNotFound, match="gone"):
        load(tmp_path / "gone.safetensors", "sd15", "single-file", tiny_folders)


@pytest.mark.parametrize("family", ["sd15", "zimage"])
def test_truncated_single_file_is_model_load_error(family, tiny_models, tiny_folders, tmp_path):
    data = tiny_models(family, "single-file").read_bytes()
    broken = tmp_path / "half.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half.safetensors.*truncated"):
        load(broken, family, "single-file", tiny_folders)


def test_garbage_file_is_model_load_error(tiny_folders, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(100))
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load(junk, "sd15", "single-file", tiny_folders)
    junk.write_bytes(b"PK\x03\x04 a pickle zip, not safetensors")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load(junk, "sd15", "single-file", tiny_folders)


def test_truncated_diffusers_weights_name_the_file(tiny_models, tiny_folders, tmp_path):
    folder = shutil.copytree(tiny_models("sd15", "diffusers"), tmp_path / "broken")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors"):
        load(folder, "sd15", "diffusers", tiny_folders)


def without_embedded_tokenizer(path: Path, out: Path) -> Path:
    """``path`` without the tokenizer Visage embeds in tiny files: like an A1111 file (or a merged one)."""
    meta = {k: v for k, v in read_header(path).metadata.items() if k != TOKENIZER_KEY}
    save_file(load_file(str(path)), str(out), metadata=meta)
    return out


def test_missing_clip_tokenizer_is_a_helpful_missing_component(tiny_models, tmp_path):
    folders = make_folders(tmp_path)  # no models/tokenizers, empty HF cache; offline (tests/conftest.py)
    bare = without_embedded_tokenizer(tiny_models("sd15", "single-file"), tmp_path / "bare.safetensors")
    with pytest.raises(MissingComponent) as info:
        load(bare, "sd15", "single-file", folders, hf_cache=tmp_path / "hf")
    message = str(info.value)
    assert str(folders.tokenizers / "clip-vit-large-patch14") in message
    assert "python -m modules.cli fetch-tokenizer" in message
    assert "HF_HUB_OFFLINE" in message  # why it was not fetched


def test_embedded_tokenizer_comes_first(tiny_models, tmp_path):
    """A tiny file's own tokenizer is used even where a (real-size) CLIP tokenizer is installed."""
    from modules.loader.tokenizers import write_clip_tokenizer

    folders = make_folders(tmp_path)
    write_clip_tokenizer(learn_clip_merges(count=450), folders.tokenizers / "clip-vit-large-patch14")
    pipe = load(tiny_models("sd15", "single-file"), "sd15", "single-file", folders)
    assert len(pipe.tokenizer) == 914 and pipe.text_encoder.config.vocab_size == 49408
    bare = without_embedded_tokenizer(tiny_models("sd15", "single-file"), tmp_path / "bare.safetensors")
    assert len(load(bare, "sd15", "single-file", folders).tokenizer) == 964  # the installed one


def test_tokenizer_bigger_than_the_text_encoder_is_refused(tmp_path):
    """Embedded or installed, a tokenizer with more tokens than the text encoder has embeddings is refused."""
    from modules.loader.tokenizers import write_clip_tokenizer
    from modules.tiny import tiny_clip_tokenizer_files

    folders = make_folders(tmp_path)
    pipe = tiny_pipeline("sd15")
    pipe.text_encoder.resize_token_embeddings(900)
    small = save_single_file(pipe, "sd15", tmp_path / "small.safetensors",
                             {TOKENIZER_KEY: json.dumps(tiny_clip_tokenizer_files())})
    with pytest.raises(ModelLoadError, match="tokenizer has 914 tokens but text_encoder only 900"):
        load(small, "sd15", "single-file", folders)
    write_clip_tokenizer(learn_clip_merges(count=450), folders.tokenizers / "clip-vit-large-patch14")
    bare = without_embedded_tokenizer(small, tmp_path / "bare.safetensors")
    with pytest.raises(ModelLoadError, match="tokenizer has 964 tokens but text_encoder only 900"):
        load(bare, "sd15", "single-file", folders)


def test_file_without_embedded_configs_uses_the_released_configs(tiny_models, tiny_folders, tmp_path):
    """A tiny file stripped of Visage metadata looks like an A1111 file: real-size configs, shapes mismatch."""
    stripped = tmp_path / "plain.safetensors"
    save_file(load_file(str(tiny_models("sd15", "single-file"))), str(stripped))
    with pytest.raises(ModelLoadError, match="plain.safetensors"):
        load(stripped, "sd15", "single-file", tiny_folders)


def test_unsupported_entries(tiny_folders, tiny_models):
    entry = entry_for(tiny_models("sd15", "single-file"), "sd15", "edge")
    with pytest.raises(UnsupportedModel, match="edge"):
        load_pipeline(entry, folders=tiny_folders)
    entry = entry_for(tiny_models("sd15", "single-file"), "sd15", "single-file")
    entry.family, entry.supported, entry.reason = None, False, "SD 2.x is not supported"
    with pytest.raises(UnsupportedModel, match="SD 2.x"):
        load_pipeline(entry, folders=tiny_folders)


def test_read_header_rejects_bad_lengths(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelLoadError, match="x.safetensors"):
        checked_header(path)
    path.write_bytes(b"\x01")
    with pytest.raises(ModelLoadError):
        checked_header(path)


def test_assemble_config_overrides_with_embedded_configs(tmp_path, tiny_folders):
    folder = assemble_config(Family.SDXL, tmp_path, {"unet": {"_class_name": "UNet2DConditionModel", "x": 1}},
                             tiny_folders.tokenizers / "clip-vit-large-patch14")
    assert json.loads((folder / "unet" / "config.json").read_text())["x"] == 1
    assert json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"] == 0.13025
    for tok in ("tokenizer", "tokenizer_2"):
        assert (folder / tok / "vocab.json").is_file() and (folder / tok / "merges.txt").is_file()
    assert json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())["pad_token"] == "!"


# ---------------------------------------------------------------------------------- Z-Image companion

@pytest.fixture(scope="module")
def zimage_dit_only(tmp_path_factory):
    """A Z-Image DiT-only single file (as distributed), plus the pipeline it came from."""
    pipe = tiny_pipeline("zimage", seed=3)
    path = save_single_file(pipe, "zimage", tmp_path_factory.mktemp("dit") / "dit.safetensors",
                               components=("transformer",))
    return path, pipe


def test_zimage_dit_without_companion_is_missing_component(zimage_dit_only, tmp_path):
    path, _ = zimage_dit_only
    assert not [k for k in load_file(str(path)) if k.startswith(("vae.", "text_encoders."))]
    with pytest.raises(MissingComponent, match="Tongyi-MAI/Z-Image-Turbo") as info:
        load(path, "zimage", "single-file", make_folders(tmp_path), hf_cache=tmp_path / "hf")
    assert "hf download" in str(info.value)


def test_zimage_dit_with_companion_in_models_folder(zimage_dit_only, tiny_models, tmp_path):
    path, source = zimage_dit_only
    folders = make_folders(tmp_path)
    shutil.copytree(tiny_models("zimage", "diffusers"), folders.checkpoints / "Z-Image-Turbo")
    assert find_zimage_companion(folders, tmp_path / "hf") == folders.checkpoints / "Z-Image-Turbo"
    pipe = load(path, "zimage", "single-file", folders, hf_cache=tmp_path / "hf")
    for key, value in source.transformer.state_dict().items():
        assert torch.equal(value, pipe.transformer.state_dict()[key]), key
    assert run_once(pipe, "zimage").shape == (1, 64, 64, 3)


def test_zimage_bare_key_dit_with_companion_in_hf_cache(zimage_dit_only, tiny_models, tmp_path):
    """Original DiT keys without the ``model.diffusion_model.`` prefix; companion from the HF cache layout."""
    path, source = zimage_dit_only
    bare = tmp_path / "bare.safetensors"
    save_file({k.removeprefix(layouts.DIT_PREFIX): v for k, v in load_file(str(path)).items()}, str(bare),
              metadata=read_header(path).metadata)
    repo = tmp_path / "hf" / "models--Tongyi-MAI--Z-Image-Turbo"
    shutil.copytree(tiny_models("zimage", "diffusers"), repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    pipe = load(bare, "zimage", "single-file", make_folders(tmp_path), hf_cache=tmp_path / "hf")
    assert torch.equal(pipe.transformer.state_dict()["layers.0.attention.to_k.weight"],
                       source.transformer.state_dict()["layers.0.attention.to_k.weight"])
    assert run_once(pipe, "zimage").shape == (1, 64, 64, 3)


# -------------------------------------------------------------------------------------- CLIP tokenizer

def _wheel_with(path: Path, merges: list[str]) -> Path:
    """A wheel-shaped zip holding a BPE file in open_clip's format (header line, merges, then more)."""
    text = "\n".join(["\"bpe_simple_vocab_16e6.txt#version: 0.2", *merges, "extra line", ""])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("open_clip/" + BPE_FILE_NAME, gzip.compress(text.encode("utf-8")))
    return path


def _synthetic_merges() -> list[str]:
    chars = list(bytes_to_unicode().values())
    return [f"{a} {b}" for a in chars for b in chars][:CLIP_MERGE_COUNT]


def test_build_from_wheel_follows_clips_recipe(tmp_path):
    from transformers import CLIPTokenizer

    out = build_clip_tokenizer_from_wheel(_wheel_with(tmp_path / "open_clip_torch-0-py3-none-any.whl",
                                                      _synthetic_merges()), tmp_path / "tok")
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (out / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + CLIP_MERGE_COUNT and "extra line" not in merges
    tok = CLIPTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok.model_max_length == 77 and tok("hi").input_ids[0] == 49406


def test_build_from_wheel_errors(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("other/file.txt", "x")
    with pytest.raises(MissingComponent, match="does not contain"):
        build_clip_tokenizer_from_wheel(tmp_path / "empty.whl", tmp_path / "o")
    with pytest.raises(MissingComponent, match="not the CLIP BPE file"):
        build_clip_tokenizer_from_wheel(_wheel_with(tmp_path / "short.whl", ["a b"] * 10), tmp_path / "o")
    (tmp_path / "text.whl").write_text("not a zip")
    with pytest.raises(MissingComponent, match="not a wheel"):
        build_clip_tokenizer_from_wheel(tmp_path / "text.whl", tmp_path / "o")


def test_rebuild_matches_the_real_tokenizer(tmp_path):
    if not SHARED_CLIP.is_dir():
        pytest.skip("../shared/assets/clip-tokenizer is not present on this machine")
    from transformers import CLIPTokenizer

    lines = (SHARED_CLIP / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    out = build_clip_tokenizer_from_wheel(_wheel_with(tmp_path / "w.whl", lines), tmp_path / "tok")
    assert json.loads((out / "vocab.json").read_text()) == json.loads((SHARED_CLIP / "vocab.json").read_text())
    assert (out / "merges.txt").read_text() == (SHARED_CLIP / "merges.txt").read_text()
    assert CLIPTokenizer.from_pretrained(str(out), local_files_only=True)("a photo of a cat").input_ids == CAT_IDS


def test_find_order_own_folder_then_hf_cache_then_wheel(tmp_path):
    folders = make_folders(tmp_path)
    hf = tmp_path / "hf"
    with pytest.raises(MissingComponent):
        find_clip_tokenizer(folders, hf)
    # a wheel dropped into models/tokenizers is rebuilt into Visage's own folder
    folders.tokenizers.mkdir(parents=True)
    _wheel_with(folders.tokenizers / "open_clip_torch-9.9-py3-none-any.whl", _synthetic_merges())
    assert find_clip_tokenizer(folders, hf) == folders.tokenizers / "clip-vit-large-patch14"
    shutil.rmtree(folders.tokenizers / "clip-vit-large-patch14")
    # the HF cache copy wins over the wheel
    snapshot = hf / "models--openai--clip-vit-large-patch14" / "snapshots" / "f00"
    write_tiny_clip_tokenizer(snapshot)
    assert find_clip_tokenizer(folders, hf) == snapshot
    # and Visage's own folder wins over everything
    write_tiny_clip_tokenizer(folders.tokenizers / "clip-vit-large-patch14")
    assert find_clip_tokenizer(folders, hf) == folders.tokenizers / "clip-vit-large-patch14"


def test_install_from_a_tokenizer_folder_copies_it_exactly(tmp_path):
    source = write_tiny_clip_tokenizer(tmp_path / "src")
    folders = make_folders(tmp_path)
    out = install_clip_tokenizer(folders, source)
    assert out == folders.tokenizers / "clip-vit-large-patch14"
    assert (out / "vocab.json").read_text() == (source / "vocab.json").read_text()
    assert (out / "merges.txt").read_text() == (source / "merges.txt").read_text()


def test_loader_modules_do_not_import_torch():
    code = ("import sys; import modules.loader, modules.loader.tokenizers, modules.checkpoints.single_file, modules.checkpoints.convert, "
            "modules.tiny, modules.tiny.tokenizers; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_fetch_tokenizer_from_the_real_wheel(tmp_path):
    """``pip download open_clip_torch`` (needs the package registry) -> the real CLIP tokenizer."""
    from transformers import CLIPTokenizer

    folders = make_folders(tmp_path)
    out = install_clip_tokenizer(folders)
    tok = CLIPTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok("a photo of a cat").input_ids == CAT_IDS and tok.model_max_length == 77
    if SHARED_CLIP.is_dir():
        assert (out / "merges.txt").read_text() == (SHARED_CLIP / "merges.txt").read_text()
        assert json.loads((out / "vocab.json").read_text()) == json.loads((SHARED_CLIP / "vocab.json").read_text())


# -- dedicated inpainting models (9-channel U-Nets) -----------------------------------------------------------
def test_inpaint_unet_config_sets_nine_input_channels():
    from modules.loader import _inpaint_unet_config
    released = json.loads((CONFIG_ROOT / "sd15" / "unet" / "config.json").read_text(encoding="utf-8"))
    config = _inpaint_unet_config(Family.SD15, {})["unet"]  # a real A1111 file: no embedded configs
    assert config["in_channels"] == 9 and config["cross_attention_dim"] == released["cross_attention_dim"]
    kept = _inpaint_unet_config(Family.SDXL, {"vae": {"a": 1}, "unet": {"in_channels": 4, "b": 2}})
    assert kept["unet"] == {"in_channels": 9, "b": 2} and kept["vae"] == {"a": 1}


@pytest.mark.parametrize("family", [Family.SD15, Family.SDXL])
def test_inpainting_single_file_loads_from_its_weights_shape(tiny_folders, tmp_path, family):
    """The U-Net's 9 input channels come from the weights' shape, not from any config the file carries: a file
    whose embedded U-Net config says 4 still loads as the family's inpaint pipeline."""
    from modules.cli.tiny import configure, run
    import argparse
    parser = argparse.ArgumentParser()
    configure(parser)
    out = tmp_path / f"inpaint-{family.value}.safetensors"
    assert run(parser.parse_args(["--family", family.value, "--format", "single-file", "--out", str(out),
                                  "--inpainting"])) == 0
    header = read_header(out)
    assert header.shapes()["model.diffusion_model.input_blocks.0.0.weight"][1] == 9
    metadata = dict(header.metadata)
    configs = json.loads(metadata["visage.configs"])
    configs["unet"]["in_channels"] = 4
    metadata["visage.configs"] = json.dumps(configs)
    stale = tmp_path / f"stale-{family.value}.safetensors"
    save_file(load_file(str(out)), str(stale), metadata=metadata)
    pipe = load_pipeline(entry_for(stale, family, "single-file"), folders=tiny_folders)
    assert type(pipe).__name__ == {Family.SD15: "StableDiffusionInpaintPipeline",
                                   Family.SDXL: "StableDiffusionXLInpaintPipeline"}[family]
    assert pipe.unet.config.in_channels == 9
