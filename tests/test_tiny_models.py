"""Tiny seeded models in the real on-disk formats: make -> load -> generate, for every family and format."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fixtures_models import entry_for, tiny_folders, tiny_models  # noqa: F401 (fixtures)
from modules.checkpoints.single_file import CONFIGS_KEY, FAMILY_KEY, TOKENIZER_KEY, save_single_file
from modules.families import Family
from modules.loader import load_pipeline
from modules.tiny import make_tiny_model
from modules.tiny.tokenizers import QWEN_CHAT_TEMPLATE, tiny_clip_vocab_size, tiny_qwen_tokenizer

FAMILIES = list(Family)
FORMATS = ["diffusers", "single-file"]
PROMPT = "portrait of a woman, soft light"


def generate(pipe, family: Family, seed: int) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    extra = {"max_sequence_length": 64} if family is Family.ZIMAGE else {}
    out = pipe(PROMPT, negative_prompt="blurry", num_inference_steps=2, height=64, width=64,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra)
    return out.images


def load(path, family, fmt, folders):
    return load_pipeline(entry_for(path, family, fmt), folders=folders, hf_cache=folders.cache / "hf")


def model_states(pipe) -> dict[str, dict]:
    return {name: c.state_dict() for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_make_load_generate(family, fmt, tiny_models, tiny_folders):
    pipe = load(tiny_models(family, fmt), family, fmt, tiny_folders)
    assert type(pipe).__name__ == {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
                                   "zimage": "ZImagePipeline"}[family.value]
    images = generate(pipe, family, seed=1)
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()
    assert images.std() > 0.01  # an actual (noisy) picture, not a constant
    if family is Family.SD15:
        assert pipe.safety_checker is None
    if family is Family.SDXL:
        assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_pixels(family, tiny_models, tiny_folders):
    pipe = load(tiny_models(family, "single-file"), family, "single-file", tiny_folders)
    first, again, other = generate(pipe, family, 7), generate(pipe, family, 7), generate(pipe, family, 8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_reload_is_bit_exact(family, tiny_models, tiny_folders, tmp_path):
    source = load(tiny_models(family, "diffusers"), family, "diffusers", tiny_folders)
    path = save_single_file(source, family, tmp_path / "copy.safetensors", {"note": "reload"})
    reloaded = load(path, family, "single-file", tiny_folders)
    before, after = model_states(source), model_states(reloaded)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].keys() == after[name].keys(), name
        for key, value in before[name].items():
            assert torch.equal(value, after[name][key]), f"{name}.{key}"
    assert np.array_equal(generate(source, family, 3), generate(reloaded, family, 3))
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["note"] == "reload" and meta[FAMILY_KEY] == family.value
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


SAMPLE_KEYS = {
    Family.SD15: ["model.diffusion_model.input_blocks.0.0.weight",
                  "model.diffusion_model.middle_block.1.proj_in.weight",
                  "model.diffusion_model.output_blocks.2.2.conv.weight", "model.diffusion_model.out.2.weight",
                  "first_stage_model.encoder.down.0.block.0.norm1.weight",
                  "first_stage_model.decoder.mid.attn_1.q.weight",
                  "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"],
    Family.SDXL: ["model.diffusion_model.label_emb.0.0.weight", "first_stage_model.decoder.up.1.upsample.conv.weight",
                  "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                  "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                  "conditioner.embedders.1.model.text_projection",
                  "conditioner.embedders.1.model.positional_embedding"],
    Family.ZIMAGE: ["model.diffusion_model.layers.0.attention.qkv.weight", "model.diffusion_model.x_embedder.weight",
                    "model.diffusion_model.final_layer.linear.weight", "model.diffusion_model.cap_pad_token",
                    "vae.decoder.up.0.block.0.conv1.weight", "text_encoders.qwen3.embed_tokens.weight"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_uses_the_original_layout(family, tiny_models):
    path = tiny_models(family, "single-file")
    state = load_file(str(path))
    for key in SAMPLE_KEYS[family]:
        assert key in state, key
    diffusers_style = (".down_blocks.", ".up_blocks.", ".mid_block.", ".attention.to_q.", ".self_attn.q_proj.")
    original_parts = ("model.", "first_stage_model.", "vae.")
    assert not [k for k in state if k.startswith(original_parts) and any(s in k for s in diffusers_style)]
    assert not [k for k in state if k.startswith(("unet.", "transformer.", "text_encoder."))]
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert set(json.loads(meta[CONFIGS_KEY])) >= {"vae", "text_encoder"}
    embedded = json.loads(meta[TOKENIZER_KEY])  # every tiny single file carries its tokenizer
    if family is not Family.ZIMAGE:
        assert sorted(embedded) == ["merges.txt", "vocab.json"]
        assert len(json.loads(embedded["vocab.json"])) == tiny_clip_vocab_size()


def test_openclip_fused_attention_and_projection(tiny_models, tiny_folders):
    """SDXL's second text encoder: q/k/v fused into in_proj, text_projection stored transposed."""
    pipe = load(tiny_models("sdxl", "diffusers"), "sdxl", "diffusers", tiny_folders)
    state = load_file(str(tiny_models("sdxl", "single-file")))
    te2 = pipe.text_encoder_2.state_dict()
    prefix = "conditioner.embedders.1.model."
    fused = state[prefix + "transformer.resblocks.1.attn.in_proj_weight"]
    parts = [te2[f"text_model.encoder.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"]
    assert torch.equal(fused, torch.cat(parts))
    assert torch.equal(state[prefix + "text_projection"], te2["text_projection.weight"].T)


@pytest.mark.parametrize("family", FAMILIES)
def test_make_tiny_model_is_seeded(family, tmp_path):
    a = load_file(str(make_tiny_model(family, "single-file", tmp_path / "a", seed=5)))
    b = load_file(str(make_tiny_model(family, "single-file", tmp_path / "b.safetensors", seed=5)))
    c = load_file(str(make_tiny_model(family, "single-file", tmp_path / "c", seed=6)))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_make_tiny_model_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        make_tiny_model("sd15", "ckpt", tmp_path / "x")


def test_diffusers_folder_is_complete(tiny_models):
    folder = tiny_models("sdxl", "diffusers")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (folder / part).is_dir(), part
    for tok in ("tokenizer", "tokenizer_2"):  # the files of real SD repositories
        assert sorted(p.name for p in (folder / tok).iterdir()) == [
            "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert json.loads((folder / "tokenizer_2" / "special_tokens_map.json").read_text())["pad_token"] == "!"


def test_tiny_clip_tokenizer_is_real_format(tiny_folders):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tiny_folders.tokenizers / "clip-vit-large-patch14"),
                                        local_files_only=True)
    assert len(tok) == tiny_clip_vocab_size()
    ids = tok("a photo of a cat").input_ids
    assert ids[0] == tok.bos_token_id == len(tok) - 2 and ids[-1] == tok.eos_token_id == len(tok) - 1
    assert len(ids) == 7  # whole words: the merges learned "photo</w>", "cat</w>", ...
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of a cat"
    assert max(tok("一只猫的照片, ÆØÅ!").input_ids) < len(tok)  # any text encodes, no unknown token


def test_tiny_qwen_tokenizer_chat_template():
    tok = tiny_qwen_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"
    no_think = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<think>\n\n</think>\n\n")
    ids = tok(text).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # special tokens stay whole
    assert tok.pad_token == "<|endoftext|>" and tok.chat_template == QWEN_CHAT_TEMPLATE
