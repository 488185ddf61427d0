"""Model registry: identification from headers/configs, hashing, scanning, lookup. Torch-free."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modules.checkpoints.header import SafetensorsHeaderError, read_header
from modules.errors import ModelNotFound
from modules.families import Family
from modules.paths import Folders
from modules.registry import HashCache, ModelFormat, ModelRegistry, identify_diffusers, identify_keys
from modules.registry import hashing
from modules.registry.identify import (
    LORA_REASON, PICKLE_REASON, REFINER_REASON, SD2_REASON, VAE_REASON, identify_edge_manifest,
)
from modules.registry.scan import entry_for_file

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DM = "model.diffusion_model."

# ------------------------------------------------------------------------------------------------
# key layouts (real key names, tiny shapes; the second dim of attn2.to_k is the real context size)
# ------------------------------------------------------------------------------------------------

SD15 = {
    DM + "input_blocks.0.0.weight": (4, 4, 3, 3),
    DM + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 768),
    DM + "middle_block.1.proj_in.weight": (4, 4, 1, 1),
    DM + "output_blocks.11.0.skip_connection.weight": (4, 4, 1, 1),
    DM + "time_embed.0.weight": (8, 4),
    "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
    "first_stage_model.decoder.conv_out.weight": (3, 4, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 4),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (4, 4),
}
SD2 = {
    DM + "input_blocks.0.0.weight": (4, 4, 3, 3),
    DM + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 1024),
    DM + "output_blocks.11.0.skip_connection.weight": (4, 4, 1, 1),
    "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
    "cond_stage_model.model.token_embedding.weight": (16, 4),
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (12, 4),
}
SDXL = {
    DM + "input_blocks.0.0.weight": (4, 4, 3, 3),
    DM + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (4, 2048),
    DM + "label_emb.0.0.weight": (8, 2816),
    DM + "output_blocks.8.0.skip_connection.weight": (4, 4, 1, 1),
    "first_stage_model.decoder.conv_out.weight": (3, 4, 3, 3),
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 4),
    "conditioner.embedders.1.model.positional_embedding": (77, 4),
    "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.bias": (4,),
}
SDXL_REFINER = {
    DM + "input_blocks.0.0.weight": (4, 4, 3, 3),
    DM + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (4, 1280),
    DM + "label_emb.0.0.weight": (8, 2560),
    "conditioner.embedders.0.model.positional_embedding": (77, 4),
    "conditioner.embedders.0.model.text_projection": (4, 4),
}
ZIMAGE = {
    "x_embedder.weight": (8, 64), "x_embedder.bias": (8,), "x_pad_token": (1, 8), "cap_pad_token": (1, 8),
    "final_layer.linear.weight": (64, 8), "final_layer.adaLN_modulation.1.weight": (8, 8),
    "cap_embedder.0.weight": (4,), "cap_embedder.1.weight": (8, 4), "t_embedder.mlp.0.weight": (16, 4),
    "layers.0.attention.qkv.weight": (24, 8), "layers.0.attention.out.weight": (8, 8),
    "layers.0.attention.q_norm.weight": (4,), "layers.0.attention.k_norm.weight": (4,),
    "layers.0.feed_forward.w1.weight": (16, 8), "layers.0.adaLN_modulation.0.weight": (32, 8),
    "noise_refiner.0.adaLN_modulation.0.weight": (32, 8), "context_refiner.0.attention.qkv.weight": (24, 8),
}
ZIMAGE_PREFIXED = {DM + k: v for k, v in ZIMAGE.items()}
ZIMAGE_DIFFUSERS_LAYOUT = {
    "all_x_embedder.2-1.weight": (8, 64), "cap_embedder.1.weight": (8, 4),
    "layers.0.attention.to_q.weight": (8, 8), "layers.0.adaLN_modulation.0.weight": (32, 8),
}
LUMINA2 = {"x_embedder.weight": (8, 64), "cap_embedder.1.weight": (8, 4), "layers.0.adaLN_modulation.1.weight": (32, 8)}
FLUX = {
    "double_blocks.0.img_attn.norm.key_norm.scale": (4,), "double_blocks.0.img_attn.qkv.weight": (12, 4),
    "single_blocks.0.linear1.weight": (8, 4), "img_in.weight": (4, 64), "guidance_in.in_layer.bias": (4,),
}
FLUX_PREFIXED = {DM + k: v for k, v in FLUX.items()}
SD3 = {DM + "joint_blocks.0.context_block.adaLN_modulation.1.bias": (8,), DM + "x_embedder.proj.weight": (4, 16, 2, 2)}
LORA_KOHYA = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (1, 4),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (4, 1),
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": (),
}
LORA_PEFT = {"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (1, 4),
             "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": (4, 1)}
LORA_ZIMAGE = {"diffusion_model.layers.0.attention.to_q.lora_A.weight": (1, 8),
               "diffusion_model.layers.0.attention.to_q.lora_B.weight": (8, 1),
               "diffusion_model.layers.0.adaLN_modulation.0.lora_A.weight": (1, 8)}
LORA_CLONEOFSIMO = {"unet:0:up": (4, 1), "unet:0:down": (1, 4), "<s1>": (768,)}
VAE_ORIGINAL = {"encoder.conv_in.weight": (4, 3, 3, 3), "encoder.down.0.block.0.conv1.weight": (4, 4, 3, 3),
                "decoder.conv_out.weight": (3, 4, 3, 3), "quant_conv.weight": (8, 8, 1, 1),
                "post_quant_conv.weight": (4, 4, 1, 1)}
VAE_DIFFUSERS = {"encoder.down_blocks.0.resnets.0.conv1.weight": (4, 4, 3, 3),
                 "decoder.up_blocks.0.resnets.0.conv1.weight": (4, 4, 3, 3), "quant_conv.weight": (8, 8, 1, 1)}
EMBEDDING = {"emb_params": (2, 768)}
CONTROLNET = {"control_model.input_hint_block.0.weight": (4, 3, 3, 3),
              "control_model.zero_convs.0.0.weight": (4, 4, 1, 1)}
TEXT_ENCODER = {"text_model.embeddings.token_embedding.weight": (16, 4),
                "text_model.encoder.layers.0.self_attn.q_proj.weight": (4, 4)}
QWEN_TE = {"model.embed_tokens.weight": (16, 4), "model.layers.0.self_attn.q_proj.weight": (4, 4)}
BARE_UNET = {"conv_in.weight": (4, 4, 3, 3), "time_embedding.linear_1.weight": (8, 4),
             "down_blocks.0.resnets.0.conv1.weight": (4, 4, 3, 3)}
UPSCALER = {"conv_first.weight": (4, 3, 3, 3), "RRDB_trunk.0.RDB1.conv1.weight": (4, 4, 3, 3)}


def without(d: dict, *prefixes: str) -> dict:
    return {k: v for k, v in d.items() if not k.startswith(prefixes)}


def with_shape(d: dict, key: str, shape: tuple) -> dict:
    return {**d, key: shape}


IDENTIFY_TABLE = [
    # id, shapes, expected family (None = unsupported), reason fragment, kind
    ("sd15", SD15, Family.SD15, "", "checkpoint"),
    ("sd15-unet-only", without(SD15, "cond_stage_model.", "first_stage_model."), Family.SD15, "", "checkpoint"),
    ("sd15-old-clip-keys", {**without(SD15, "cond_stage_model."),
                            "cond_stage_model.transformer.embeddings.position_embedding.weight": (77, 4)},
     Family.SD15, "", "checkpoint"),
    ("sd15-tiny-ctx", with_shape(SD15, DM + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (4, 32)),
     Family.SD15, "", "checkpoint"),
    ("sd2", SD2, None, SD2_REASON, "checkpoint"),
    ("sd2-tiny-ctx", with_shape(SD2, DM + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (4, 32)),
     None, SD2_REASON, "checkpoint"),
    ("sd2-unet-only", without(SD2, "cond_stage_model.", "first_stage_model."), None, SD2_REASON, "checkpoint"),
    ("sd15-inpaint", with_shape(SD15, DM + "input_blocks.0.0.weight", (4, 9, 3, 3)), Family.SD15, "",
     "checkpoint"),
    ("sd15-pix2pix", with_shape(SD15, DM + "input_blocks.0.0.weight", (4, 8, 3, 3)), None, "pix2pix",
     "checkpoint"),
    ("sdxl", SDXL, Family.SDXL, "", "checkpoint"),
    ("sdxl-tiny-ctx", with_shape(SDXL, DM + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", (4, 32)),
     Family.SDXL, "", "checkpoint"),
    ("sdxl-unet-only", without(SDXL, "conditioner.", "first_stage_model."), Family.SDXL, "", "checkpoint"),
    ("sdxl-refiner", SDXL_REFINER, None, REFINER_REASON, "checkpoint"),
    ("sdxl-refiner-unet-only", without(SDXL_REFINER, "conditioner."), None, REFINER_REASON, "checkpoint"),
    ("zimage", ZIMAGE, Family.ZIMAGE, "", "checkpoint"),
    ("zimage-prefixed", ZIMAGE_PREFIXED, Family.ZIMAGE, "", "checkpoint"),
    ("zimage-diffusers-keys", ZIMAGE_DIFFUSERS_LAYOUT, Family.ZIMAGE, "", "checkpoint"),
    ("lumina2", LUMINA2, None, "Lumina", "checkpoint"),
    ("flux", FLUX, None, "looks like a FLUX model", "checkpoint"),
    ("flux-prefixed", FLUX_PREFIXED, None, "looks like a FLUX model", "checkpoint"),
    ("sd3", SD3, None, "Stable Diffusion 3", "checkpoint"),
    ("lora-kohya", LORA_KOHYA, None, LORA_REASON, "lora"),
    ("lora-peft", LORA_PEFT, None, LORA_REASON, "lora"),
    ("lora-zimage", LORA_ZIMAGE, None, LORA_REASON, "lora"),
    ("lora-cloneofsimo", LORA_CLONEOFSIMO, None, LORA_REASON, "lora"),
    ("vae", VAE_ORIGINAL, None, VAE_REASON, "vae"),
    ("vae-diffusers", VAE_DIFFUSERS, None, VAE_REASON, "vae"),
    ("embedding", EMBEDDING, None, "textual-inversion", "embedding"),
    ("controlnet", CONTROLNET, None, "ControlNet", "controlnet"),
    ("text-encoder", TEXT_ENCODER, None, "text encoder", "text-encoder"),
    ("qwen-text-encoder", QWEN_TE, None, "text encoder", "text-encoder"),
    ("bare-diffusers-unet", BARE_UNET, None, "diffusers-format U-Net", "unknown"),
    ("upscaler", UPSCALER, None, "upscaler", "upscaler"),
    ("unknown", {"foo.bar": (2,)}, None, "unrecognised", "unknown"),
    ("no-tensors", {}, None, "no tensors", "unknown"),
]


@pytest.mark.parametrize("shapes,family,reason,kind", [row[1:] for row in IDENTIFY_TABLE],
                         ids=[row[0] for row in IDENTIFY_TABLE])
def test_identify_keys_table(shapes, family, reason, kind):
    result = identify_keys(shapes)
    assert result.family is family
    assert result.supported is (family is not None)
    assert reason in result.reason
    assert result.kind == kind


def test_identify_components_and_layout_details():
    assert identify_keys(SD15).details["components"] == ["unet", "vae", "text_encoder"]
    assert identify_keys(SDXL).details["components"] == ["unet", "vae", "text_encoder", "text_encoder_2"]
    assert identify_keys(SD15).details["context_dim"] == 768
    z = identify_keys(ZIMAGE_PREFIXED)
    assert z.details["components"] == ["transformer"]
    assert z.details["key_prefix"] == DM and z.details["key_layout"] == "original"
    assert identify_keys(ZIMAGE_DIFFUSERS_LAYOUT).details["key_layout"] == "diffusers"


TINY_UNET_NO_TE = without(with_shape(SD15, DM + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (4, 32)),
                          "cond_stage_model.")


@pytest.mark.parametrize("shapes,meta,family,reason", [
    (SD15, {"visage.family": "sd15", "visage.configs": "{}"}, Family.SD15, ""),
    (SD15, {"visage.family": "sdxl"}, None, "metadata says sdxl but the weights look like sd15"),
    (ZIMAGE, {"visage.family": "sd15"}, None, "metadata says sd15"),
    (TINY_UNET_NO_TE, {}, None, "unrecognised context size"),
    (TINY_UNET_NO_TE, {"visage.family": "sd15"}, Family.SD15, ""),
    (TINY_UNET_NO_TE, {"visage.family": "sdxl"}, Family.SDXL, ""),
    (TINY_UNET_NO_TE, {"visage.family": "zimage"}, None, "do not match"),
    (SD15, {"visage.family": "sd9"}, None, "unknown visage.family"),
    (LORA_KOHYA, {"visage.family": "sd15"}, None, LORA_REASON),  # metadata never overrides a clear verdict
    (SD2, {"visage.family": "sd15"}, None, SD2_REASON),
])
def test_identify_visage_metadata(shapes, meta, family, reason):
    result = identify_keys(shapes, meta)
    assert result.family is family
    assert result.supported is (family is not None)
    assert reason in result.reason


def test_visage_configs_marks_embedded_config():
    assert identify_keys(SD15, {"visage.configs": "{}"}).details.get("embedded_config") is True
    assert "embedded_config" not in identify_keys(SD15).details


# ------------------------------------------------------------------------------------------------
# files on disk
# ------------------------------------------------------------------------------------------------

def write_st(path: Path, shapes: dict, metadata: dict | None = None, dtype=np.float16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.zeros(shape, dtype=dtype) for k, shape in shapes.items()}
    if tensors:
        save_file(tensors, str(path), metadata=metadata)
    else:  # safetensors refuses nothing to save here, but write the format by hand to be sure
        header = json.dumps({"__metadata__": metadata or {}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.mark.parametrize("name,shapes,family,reason", [
    ("sd15.safetensors", SD15, Family.SD15, ""),
    ("sdxl.safetensors", SDXL, Family.SDXL, ""),
    ("zimage.safetensors", ZIMAGE_PREFIXED, Family.ZIMAGE, ""),
    ("sd2.safetensors", SD2, None, SD2_REASON),
    ("refiner.safetensors", SDXL_REFINER, None, REFINER_REASON),
    ("lora.safetensors", LORA_KOHYA, None, LORA_REASON),
    ("vae.safetensors", VAE_ORIGINAL, None, VAE_REASON),
    ("flux.safetensors", FLUX, None, "FLUX"),
])
def test_entry_for_file_reads_header(tmp_path, name, shapes, family, reason):
    path = write_st(tmp_path / name, shapes)
    entry = entry_for_file(path, "x")
    assert entry.format == ModelFormat.SINGLE_FILE
    assert entry.family is family and entry.supported is (family is not None)
    assert reason in entry.reason
    assert entry.size_bytes == path.stat().st_size
    assert entry.details["dtype"] == "F16"


def test_header_reader_matches_safetensors(tmp_path):
    path = write_st(tmp_path / "a.safetensors", SDXL, {"visage.family": "sdxl"}, dtype=np.float32)
    header = read_header(path)
    assert header.shapes() == {k: tuple(v) for k, v in SDXL.items()}
    assert header.metadata == {"visage.family": "sdxl"}
    assert {t.dtype for t in header.tensors.values()} == {"F32"}


def _valid_bytes() -> bytes:
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"\x01\x02\x03", "too short"),
    (struct.pack("<Q", 0), "zero"),
    (struct.pack("<Q", 1 << 40) + b"{}", "implausibly large"),
    (struct.pack("<Q", 500) + b'{"a": 1}', "truncated inside its header"),
    (struct.pack("<Q", 9) + b"not json!", "not valid JSON"),
    (struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (_valid_bytes()[:-3], "truncated"),
    (_valid_bytes().replace(b"[0, 8]", b"[8, 0]"), "data_offsets"),
    (_valid_bytes().replace(b'"shape": [2]', b'"shape": [3]'), "size does not match"),
    (_valid_bytes().replace(b'"F32"', b'null '), "dtype"),
])
def test_corrupt_safetensors_are_unsupported_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsHeaderError, match=reason):
        read_header(path)
    entry = entry_for_file(path, "bad")
    assert not entry.supported and entry.family is None
    assert entry.reason.startswith("unreadable safetensors file") and reason in entry.reason


def test_valid_minimal_file_parses(tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_valid_bytes())
    assert read_header(path).shapes() == {"a": (2,)}


def test_truncated_real_file(tmp_path):
    path = write_st(tmp_path / "t.safetensors", SD15)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    entry = entry_for_file(path, "t")
    assert not entry.supported and "truncated" in entry.reason


def test_pickle_is_listed_never_opened(tmp_path, monkeypatch):
    path = tmp_path / "old.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    import builtins
    real_open = builtins.open

    def guarded_open(file, *a, **k):
        assert Path(file) != path, "a pickle checkpoint must not be opened"
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    entry = entry_for_file(path, "old")
    assert entry.format == ModelFormat.PICKLE
    assert not entry.supported and entry.reason == PICKLE_REASON


# ------------------------------------------------------------------------------------------------
# diffusers folders
# ------------------------------------------------------------------------------------------------

def _index(cls: str, **components) -> dict:
    return {"_class_name": cls, "_diffusers_version": "0.42.1", **components}


SD_COMPONENTS = {c: ["diffusers", "X"] for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
SDXL_COMPONENTS = {c: ["diffusers", "X"] for c in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer",
                                                   "tokenizer_2", "scheduler")}
Z_COMPONENTS = {c: ["diffusers", "X"] for c in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}


@pytest.mark.parametrize("index,configs,family,reason", [
    (_index("StableDiffusionPipeline", **SD_COMPONENTS), {"unet": {"cross_attention_dim": 768}}, Family.SD15, ""),
    (_index("StableDiffusionPipeline", **SD_COMPONENTS), {"unet": {"cross_attention_dim": 32}}, Family.SD15, ""),
    (_index("StableDiffusionPipeline", **SD_COMPONENTS), {"unet": {"cross_attention_dim": 1024}}, None, SD2_REASON),
    (_index("StableDiffusionInpaintPipeline", **SD_COMPONENTS), {"unet": {"in_channels": 9}}, Family.SD15, ""),
    (_index("StableDiffusionPipeline", **SD_COMPONENTS), {"unet": {"in_channels": 8}}, None, "pix2pix"),
    (_index("StableDiffusionXLPipeline", **SDXL_COMPONENTS), {"unet": {"cross_attention_dim": 2048}},
     Family.SDXL, ""),
    (_index("StableDiffusionXLImg2ImgPipeline", **{**SDXL_COMPONENTS, "text_encoder": [None, None]},
            requires_aesthetics_score=True), {}, None, REFINER_REASON),
    (_index("ZImagePipeline", **Z_COMPONENTS), {"transformer": {"dim": 3840}}, Family.ZIMAGE, ""),
    (_index("FluxPipeline"), {}, None, "FluxPipeline is not supported (looks like a FLUX model)"),
    (_index("KolorsPipeline"), {}, None, "KolorsPipeline is not supported"),
    ({"unet": ["diffusers", "UNet2DConditionModel"]}, {}, None, "no _class_name"),
])
def test_identify_diffusers_table(index, configs, family, reason):
    result = identify_diffusers(index, configs)
    assert result.family is family and result.supported is (family is not None)
    assert reason in result.reason


@pytest.mark.parametrize("family, shapes", [("sd15", SD15), ("sdxl", SDXL)])
def test_inpainting_unets_are_identified(family, shapes):
    """A 9-channel U-Net (latents + mask + masked-image latents) is a dedicated inpainting model of its family."""
    key = DM + "input_blocks.0.0.weight"
    result = identify_keys(with_shape(shapes, key, (320, 9, 3, 3)))
    assert result.supported and result.family is Family(family) and result.details["inpainting"] is True
    assert "inpainting" not in identify_keys(with_shape(shapes, key, (320, 4, 3, 3))).details
    cls = {"sd15": "StableDiffusionInpaintPipeline", "sdxl": "StableDiffusionXLInpaintPipeline"}[family]
    components = SD_COMPONENTS if family == "sd15" else SDXL_COMPONENTS
    folder = identify_diffusers(_index(cls, **components), {"unet": {"in_channels": 9}})
    assert folder.supported and folder.family is Family(family) and folder.details["inpainting"] is True
    assert "inpainting" not in identify_diffusers(_index(cls, **components), {"unet": {"in_channels": 4}}).details


def test_identify_diffusers_reports_missing_components():
    result = identify_diffusers(_index("ZImagePipeline", **Z_COMPONENTS), {}, present=["transformer", "vae"])
    assert result.supported and result.family is Family.ZIMAGE
    assert result.details["missing_components"] == ["text_encoder", "tokenizer", "scheduler"]
    assert "missing components" in result.reason


def make_diffusers_folder(folder: Path, cls: str, component: str, config: dict, components: dict,
                          weights: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(_index(cls, **components)))
    for c in components:
        (folder / c).mkdir(exist_ok=True)
    (folder / component / "config.json").write_text(json.dumps(config))
    if weights:
        save_file({"w": np.arange(4, dtype=np.float32)},
                  str(folder / component / "diffusion_pytorch_model.safetensors"))
        (folder / "vae").mkdir(exist_ok=True)
        save_file({"v": np.ones(3, dtype=np.float32)}, str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    return folder


def make_models(root: Path) -> Folders:
    """A models/ tree with one of everything."""
    folders = Folders(models=root / "models", outputs=root / "outputs", cache=root / "cache")
    ck = folders.checkpoints
    write_st(ck / "sd15.safetensors", SD15)
    write_st(ck / "xl" / "sdxl.safetensors", SDXL)
    write_st(ck / "zimage-dit.safetensors", ZIMAGE_PREFIXED)
    write_st(ck / "sd2.safetensors", SD2)
    write_st(ck / "my_lora.safetensors", LORA_KOHYA)
    (ck / "old.ckpt").write_bytes(b"\x80\x02pickle")
    (ck / "README.md").write_text("not a model")
    (ck / ".hidden.safetensors").write_bytes(b"junk")
    make_diffusers_folder(ck / "sd15-diffusers", "StableDiffusionPipeline", "unet", {"cross_attention_dim": 768},
                          SD_COMPONENTS, weights=True)
    make_diffusers_folder(ck / "nested" / "zimage-diffusers", "ZImagePipeline", "transformer", {"dim": 32},
                          Z_COMPONENTS)
    edge = folders.edge / "portrait-edge"
    edge.mkdir(parents=True)
    (edge / "manifest.json").write_text(json.dumps({"family": "sd15", "version": 1}))
    (edge / "unet.onnx").write_bytes(b"onnx")
    return folders


def make_hf_cache(root: Path) -> Path:
    hf = root / "hf"
    repo = hf / "models--org--sdxl-repo"
    old = repo / "snapshots" / "1111"
    new = repo / "snapshots" / "2222"
    make_diffusers_folder(old, "StableDiffusionXLPipeline", "unet", {"cross_attention_dim": 2048}, SDXL_COMPONENTS)
    make_diffusers_folder(new, "FluxPipeline", "transformer", {}, {"transformer": ["diffusers", "X"]})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1111\n")  # refs/main wins over the newer snapshot
    z = hf / "models--Tongyi-MAI--Z-Image-Turbo" / "snapshots" / "abcd"
    make_diffusers_folder(z, "ZImagePipeline", "transformer", {"dim": 3840}, Z_COMPONENTS)
    (hf / "models--bert--base" / "snapshots" / "ffff").mkdir(parents=True)  # not diffusers: skipped
    (hf / "models--bert--base" / "snapshots" / "ffff" / "config.json").write_text("{}")
    return hf


@pytest.fixture()
def registry(tmp_path):
    folders = make_models(tmp_path)
    reg = ModelRegistry(folders, HashCache(folders.cache / "hashes.json"), hf_cache=make_hf_cache(tmp_path))
    reg.scan()
    return reg


def test_scan_lists_everything(registry):
    by_name = {e.name: e for e in registry.entries()}
    assert set(by_name) == {
        "sd15", "xl/sdxl", "zimage-dit", "sd2", "my_lora", "old", "sd15-diffusers", "nested/zimage-diffusers",
        "org/sdxl-repo", "Tongyi-MAI/Z-Image-Turbo", "edge/portrait-edge",
    }
    assert by_name["sd15"].family is Family.SD15 and by_name["sd15"].format == ModelFormat.SINGLE_FILE
    assert by_name["xl/sdxl"].family is Family.SDXL
    assert by_name["zimage-dit"].family is Family.ZIMAGE
    assert not by_name["sd2"].supported and by_name["sd2"].reason == SD2_REASON
    assert by_name["my_lora"].reason == LORA_REASON and by_name["my_lora"].details["kind"] == "lora"
    assert by_name["old"].format == ModelFormat.PICKLE and by_name["old"].reason == PICKLE_REASON
    assert by_name["sd15-diffusers"].format == ModelFormat.DIFFUSERS
    assert by_name["sd15-diffusers"].family is Family.SD15
    assert by_name["nested/zimage-diffusers"].family is Family.ZIMAGE
    hf = by_name["org/sdxl-repo"]
    assert hf.source == "hf-cache" and hf.family is Family.SDXL and hf.details["revision"] == "1111"
    assert by_name["Tongyi-MAI/Z-Image-Turbo"].family is Family.ZIMAGE
    edge = by_name["edge/portrait-edge"]
    assert edge.format == ModelFormat.EDGE and edge.source == "edge" and edge.family is Family.SD15


def test_scan_does_not_list_files_inside_diffusers_folders(registry):
    paths = [e.path for e in registry.entries()]
    assert not any("diffusion_pytorch_model" in str(p) for p in paths)


def test_scan_hashes_supported_models_only(registry):
    by_name = {e.name: e for e in registry.entries()}
    sd15 = by_name["sd15"]
    assert sd15.hash == hashlib.sha256(sd15.path.read_bytes()).hexdigest()[:10]
    assert sd15.title == f"sd15 [{sd15.hash}]"
    assert by_name["sd2"].hash is None and by_name["old"].hash is None
    assert registry.ensure_hash(by_name["old"]) == hashlib.sha256(b"\x80\x02pickle").hexdigest()[:10]
    assert by_name["sd15-diffusers"].hash is not None and len(by_name["sd15-diffusers"].hash) == 10


def test_scan_without_hashes_then_ensure(tmp_path):
    folders = make_models(tmp_path)
    reg = ModelRegistry(folders, HashCache(folders.cache / "h.json"), hf_cache=tmp_path / "no-hf-cache")
    entries = reg.scan(compute_hashes=False)
    assert all(e.hash is None for e in entries)
    assert not (folders.cache / "h.json").exists()
    entry = reg.get("sd15")
    assert reg.ensure_hash(entry) == hashlib.sha256(entry.path.read_bytes()).hexdigest()[:10]
    assert entry.hash is not None
    # a later scan without hashing fills the hash from the cache
    again = {e.name: e for e in reg.scan(compute_hashes=False)}
    assert again["sd15"].hash == entry.hash


def test_missing_folders_scan_empty(tmp_path):
    folders = Folders(models=tmp_path / "nothing", outputs=tmp_path / "o", cache=tmp_path / "c")
    reg = ModelRegistry(folders, HashCache(tmp_path / "c" / "h.json"), hf_cache=tmp_path / "nohf")
    assert reg.scan() == []
    with pytest.raises(ModelNotFound, match="no models found"):
        reg.get("anything")


def test_default_hf_cache_comes_from_huggingface_hub(tmp_path, monkeypatch):
    hf = make_hf_cache(tmp_path)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    folders = Folders(models=tmp_path / "m", outputs=tmp_path / "o", cache=tmp_path / "c")
    reg = ModelRegistry(folders, HashCache(tmp_path / "c" / "h.json"))
    names = {e.name for e in reg.scan(compute_hashes=False)}
    assert names == {"org/sdxl-repo", "Tongyi-MAI/Z-Image-Turbo"}


def test_duplicate_names_keep_supported_first(tmp_path):
    folders = Folders(models=tmp_path / "m", outputs=tmp_path / "o", cache=tmp_path / "c")
    write_st(folders.checkpoints / "foo.safetensors", SD15)
    (folders.checkpoints / "foo.ckpt").write_bytes(b"pickle")
    reg = ModelRegistry(folders, HashCache(tmp_path / "c" / "h.json"), hf_cache=tmp_path / "nohf")
    by_name = {e.name: e for e in reg.scan()}
    assert set(by_name) == {"foo", "foo.ckpt"}
    assert by_name["foo"].family is Family.SD15
    assert by_name["foo.ckpt"].format == ModelFormat.PICKLE


# ------------------------------------------------------------------------------------------------
# lookup
# ------------------------------------------------------------------------------------------------

def test_get_by_name_title_hash_path(registry):
    sd15 = registry.get("sd15")
    assert sd15.family is Family.SD15
    assert registry.get("sd15.safetensors") is sd15  # A1111 names carry the extension
    assert registry.get(sd15.title) is sd15
    assert registry.get(f"sd15.safetensors [{sd15.hash}]") is sd15
    assert registry.get(sd15.hash) is sd15
    assert registry.get(sd15.hash.upper()) is sd15
    assert registry.get(hashlib.sha256(sd15.path.read_bytes()).hexdigest()) is sd15
    assert registry.get(str(sd15.path)) is sd15
    assert registry.get(sd15.path) is sd15
    assert registry.get("SD15") is sd15  # case-insensitive when unique
    assert registry.get("sdxl") is registry.get("xl/sdxl")  # bare file name when unique
    assert registry.get("xl\\sdxl").family is Family.SDXL
    assert registry.get("xl/sdxl.safetensors") is registry.get("xl/sdxl")
    assert registry.get("sdxl.safetensors") is registry.get("xl/sdxl")
    assert registry.get("org/sdxl-repo").source == "hf-cache"
    # a title whose name is unknown still resolves by its hash (renamed file)
    assert registry.get(f"renamed [{sd15.hash}]") is sd15


def test_get_by_hash_uses_hashes_cached_after_the_scan(tmp_path):
    folders = make_models(tmp_path)
    reg = ModelRegistry(folders, HashCache(tmp_path / "h.json"), hf_cache=tmp_path / "nohf")
    reg.scan(compute_hashes=False)
    path = folders.checkpoints / "xl" / "sdxl.safetensors"
    want = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    with pytest.raises(ModelNotFound):  # not hashed yet: a hash lookup does not hash files
        reg.get(want)
    reg.hash_cache.full_sha256(path)  # hashed meanwhile (e.g. by a merge that read the file)
    assert reg.get(want).name == "xl/sdxl"


def test_get_miss_computes_no_hash(tmp_path, monkeypatch):
    folders = make_models(tmp_path)
    reg = ModelRegistry(folders, HashCache(tmp_path / "h.json"), hf_cache=tmp_path / "nohf")
    calls = []

    def spy(path):
        calls.append(Path(path))
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(hashing, "sha256_file", spy)
    for query in ("no-such-model", "deadbeef00", "no-such-model [0123456789]", "ab" * 32):
        with pytest.raises(ModelNotFound):
            reg.get(query)  # the first call also scans (without hashing)
    assert calls == []
    assert reg.get("sd15").hash is None


def test_get_unknown_lists_close_names(registry):
    with pytest.raises(ModelNotFound, match="did you mean: .*sd15") as info:
        registry.get("sd1")
    assert "sd1" in str(info.value)
    with pytest.raises(ModelNotFound):
        registry.get("")
    with pytest.raises(ModelNotFound):
        registry.get("deadbeef00")


def test_get_scans_once_when_never_scanned(tmp_path):
    folders = make_models(tmp_path)
    reg = ModelRegistry(folders, HashCache(tmp_path / "h.json"), hf_cache=tmp_path / "nohf")
    assert reg.entries() == []
    assert reg.get("sd15").family is Family.SD15


def test_refresh_sees_new_and_removed_files(registry):
    root = registry.folders.checkpoints
    write_st(root / "new.safetensors", SDXL)
    (root / "sd15.safetensors").unlink()
    names = {e.name for e in registry.refresh()}
    assert "new" in names and "sd15" not in names


def test_entry_for_path_outside_folders(registry, tmp_path):
    outside = write_st(tmp_path / "elsewhere" / "z.safetensors", ZIMAGE)
    entry = registry.entry_for_path(outside)
    assert entry.family is Family.ZIMAGE and entry.name == "z"
    with pytest.raises(ModelNotFound):  # get() only finds registered models
        registry.get(str(outside))
    assert registry.entry_for_path(registry.get("sd15").path) is registry.get("sd15")
    (tmp_path / "q.gguf").write_bytes(b"GGUF")
    assert "GGUF" in registry.entry_for_path(tmp_path / "q.gguf").reason
    (tmp_path / "w.bin").write_bytes(b"\x80\x02")
    assert registry.entry_for_path(tmp_path / "w.bin").reason == PICKLE_REASON
    (tmp_path / "notes.txt").write_text("hi")
    assert "expected .safetensors" in registry.entry_for_path(tmp_path / "notes.txt").reason
    assert not registry.entry_for_path(tmp_path / "missing.safetensors").supported
    assert registry.entry_for_path(registry.get("sd15-diffusers").path).family is Family.SD15


def test_concurrent_scans_and_lookups(registry):
    errors = []

    def work():
        try:
            for _ in range(5):
                registry.scan(compute_hashes=False)
                assert registry.get("sd15").family is Family.SD15
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(registry.entries()) == 11


# ------------------------------------------------------------------------------------------------
# hashing
# ------------------------------------------------------------------------------------------------

def test_model_hash_is_sha256_prefix(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 * hashing.CHUNK_BYTES + 123)  # several chunks plus a partial one
    path.write_bytes(data)
    cache = HashCache(tmp_path / "cache.json")
    assert cache.full_sha256(path) == hashlib.sha256(data).hexdigest()
    assert cache.model_hash(path) == hashlib.sha256(data).hexdigest()[:10]


def test_hash_cache_hit_does_not_reread(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x" * 1000)
    cache_file = tmp_path / "cache" / "hashes.json"
    first = HashCache(cache_file).model_hash(path)
    assert json.loads(cache_file.read_text())["version"] == 1
    mtime = path.stat().st_mtime_ns

    def boom(_path):
        raise AssertionError("file was re-read")

    monkeypatch.setattr(hashing, "sha256_file", boom)
    assert HashCache(cache_file).model_hash(path) == first  # from disk, new instance
    assert path.stat().st_mtime_ns == mtime
    # a changed file (size + mtime) is hashed again
    path.write_bytes(b"y" * 1001)
    with pytest.raises(AssertionError, match="re-read"):
        HashCache(cache_file).model_hash(path)


def test_hash_cache_write_is_atomic_and_leaves_no_temp(tmp_path):
    cache_file = tmp_path / "hashes.json"
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 10)
        HashCache(cache_file).model_hash(p)
    doc = json.loads(cache_file.read_text())
    assert len(doc["files"]) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("garbage", ["{not json", "[]", '{"version": 1, "files": []}', '{"version": 99}', "\x00\x01"])
def test_corrupt_hash_cache_is_ignored(tmp_path, caplog, garbage):
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text(garbage)
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with caplog.at_level(logging.WARNING, logger="modules.registry.hashing"):
        assert HashCache(cache_file).model_hash(path) == hashlib.sha256(b"abc").hexdigest()[:10]
    assert "hash cache" in caplog.text
    assert json.loads(cache_file.read_text())["version"] == 1  # rewritten valid


def test_unwritable_hash_cache_is_not_fatal(tmp_path, caplog):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with caplog.at_level(logging.WARNING, logger="modules.registry.hashing"):
        assert HashCache(blocker / "hashes.json").model_hash(path) == hashlib.sha256(b"abc").hexdigest()[:10]
    assert "cannot write hash cache" in caplog.text


def test_diffusers_folder_hash_definition(tmp_path):
    folder = make_diffusers_folder(tmp_path / "d", "StableDiffusionPipeline", "unet", {}, SD_COMPONENTS,
                                   weights=True)
    (folder / "unet" / "extra.bin").write_bytes(b"bin weights")
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")  # not hashed
    files = ["model_index.json", "unet/diffusion_pytorch_model.safetensors", "unet/extra.bin",
             "vae/diffusion_pytorch_model.safetensors"]
    text = "".join(f"{rel} {hashlib.sha256((folder / rel).read_bytes()).hexdigest()}\n" for rel in sorted(files))
    expected = hashlib.sha256(text.encode()).hexdigest()
    cache = HashCache(tmp_path / "h.json")
    assert cache.folder_sha256(folder) == expected
    assert len(json.loads((tmp_path / "h.json").read_text())["files"]) == 4  # cached per file
    (folder / "scheduler" / "scheduler_config.json").write_text('{"changed": 1}')
    assert cache.folder_sha256(folder) == expected
    (folder / "unet" / "extra.bin").write_bytes(b"other weights")
    assert cache.folder_sha256(folder) != expected
    assert HashCache(tmp_path / "fresh.json").folder_sha256(folder, compute=False) is None


# ------------------------------------------------------------------------------------------------
# misc
# ------------------------------------------------------------------------------------------------

def test_edge_manifest_identification():
    assert identify_edge_manifest({"family": "zimage"}).family is Family.ZIMAGE
    assert not identify_edge_manifest({"family": "sd3"}).supported
    assert not identify_edge_manifest([1, 2]).supported


def test_import_is_torch_free():
    code = ("import modules.registry, sys; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not (SHARED / "assets" / "lora").is_dir(), reason="../shared/assets/lora not present")
def test_real_cloneofsimo_lora_is_recognised_as_lora():
    for path in sorted((SHARED / "assets" / "lora").glob("*.safetensors")):
        entry = entry_for_file(path, path.stem)
        assert entry.reason == LORA_REASON and entry.details["kind"] == "lora", path.name


# ------------------------------------------------------------------------------------------------
# the tiny real-format models written by modules.tiny (needs torch/diffusers; skipped without them)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    try:
        from modules.tiny import make_tiny_model
    except ImportError as exc:
        pytest.skip(f"modules.tiny unavailable: {exc}")
    folders = Folders(models=tmp_path_factory.mktemp("tiny") / "models", outputs=Path("unused"), cache=Path("unused"))
    written = {}
    for family in Family:
        for fmt in (ModelFormat.DIFFUSERS, ModelFormat.SINGLE_FILE):
            out = folders.checkpoints / f"tiny-{family.value}-{fmt}"
            written[(family, fmt)] = Path(make_tiny_model(family, fmt, out, seed=0))
    return folders, written


def test_tiny_models_identify(tiny_models, tmp_path):
    folders, written = tiny_models
    reg = ModelRegistry(folders, HashCache(tmp_path / "h.json"), hf_cache=tmp_path / "nohf")
    entries = reg.scan(compute_hashes=False)
    assert len(entries) == 6  # component weights inside the diffusers folders are not listed
    for (family, fmt), path in written.items():
        entry = reg.get(f"tiny-{family.value}-{fmt}")
        assert entry.path == path
        assert entry.format == fmt, entry
        assert entry.supported and entry.family is family, entry
        if fmt == ModelFormat.SINGLE_FILE:
            assert entry.details.get("embedded_config") is True
            # identified by key names alone too, not only through visage.family metadata
            header = read_header(path)
            assert identify_keys(header.shapes()).family is family
