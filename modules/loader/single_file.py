"""Single-file checkpoints: read/validate a safetensors header, and save a pipeline in the original layout.

Torch-free at import (torch and safetensors are imported inside the functions that need them).

Layouts written by :func:`save_single_file` (what ``from_single_file``, A1111 and ComfyUI read):

* sd15: ``model.diffusion_model.*`` (LDM U-Net), ``first_stage_model.*`` (LDM VAE),
  ``cond_stage_model.transformer.text_model.*`` (CLIP-L).
* sdxl: the same U-Net/VAE prefixes, ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP bigG layout: ``transformer.resblocks.N.attn.in_proj_weight``,
  ``ln_final``, ``positional_embedding``, ``text_projection`` stored transposed).
* zimage ("all-in-one", ComfyUI style): ``model.diffusion_model.*`` (the original Z-Image DiT keys: fused
  ``attention.qkv``, ``attention.out``, ``q_norm``/``k_norm``, ``x_embedder``, ``final_layer``),
  ``text_encoders.qwen3.*`` (the Qwen3 text encoder, transformers' own ``Qwen3Model`` keys) and ``vae.*``
  (LDM VAE layout, as in FLUX's ``ae.safetensors``). A plain Z-Image DiT file has only the first group.

Metadata added to every file Visage writes (A1111 files from elsewhere have none of it):
``visage.family``, ``visage.configs`` (JSON ``{component: diffusers/transformers config}`` so non-standard
shapes, e.g. tiny test models, rebuild exactly) and, for zimage, ``visage.tokenizer`` (JSON
``{file name: text}`` of the tokenizer folder, so an all-in-one file needs no companion folder).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from modules.errors import ModelLoadError, UnsupportedModel
from modules.families import Family

CONFIGS_KEY = "visage.configs"
FAMILY_KEY = "visage.family"
TOKENIZER_KEY = "visage.tokenizer"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

UNET_PREFIX = "model.diffusion_model."
DIT_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
ZIMAGE_VAE_PREFIX = "vae."
ZIMAGE_TE_PREFIX = "text_encoders.qwen3."
SD15_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

#: component name -> (key prefix in the file, converter name) per family
LAYOUTS: dict[Family, dict[str, tuple[str, str]]] = {
    Family.SD15: {"unet": (UNET_PREFIX, "unet"), "vae": (LDM_VAE_PREFIX, "vae"),
                  "text_encoder": (SD15_CLIP_PREFIX, "clip")},
    Family.SDXL: {"unet": (UNET_PREFIX, "unet"), "vae": (LDM_VAE_PREFIX, "vae"),
                  "text_encoder": (SDXL_CLIP_PREFIX, "clip"), "text_encoder_2": (SDXL_OPENCLIP_PREFIX, "openclip")},
    Family.ZIMAGE: {"transformer": (DIT_PREFIX, "zimage_dit"), "vae": (ZIMAGE_VAE_PREFIX, "vae"),
                    "text_encoder": (ZIMAGE_TE_PREFIX, "identity")},
}

RESNET_UNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
               ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."))
RESNET_VAE = (("conv_shortcut.", "nin_shortcut."),)
ATTN_VAE = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))
OPENCLIP_LAYER = (("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
                  ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))
OPENCLIP_TOP = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                "text_model.embeddings.position_embedding.weight": "positional_embedding",
                "text_model.final_layer_norm.weight": "ln_final.weight",
                "text_model.final_layer_norm.bias": "ln_final.bias"}
ZIMAGE_DIT = (("all_x_embedder.2-1.", "x_embedder."), ("all_final_layer.2-1.", "final_layer."),
              (".attention.to_out.0.", ".attention.out."), (".attention.norm_q.", ".attention.q_norm."),
              (".attention.norm_k.", ".attention.k_norm."))


# ----------------------------------------------------------------------------------------------- reading

def read_header(path: Path) -> dict:
    """The safetensors JSON header of ``path``; ModelLoadError if the file is not complete and well-formed."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length <= 0 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelLoadError(f"{path.name}: not a complete safetensors file (bad or truncated header)")
        try:
            header = json.loads(fh.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ModelLoadError(f"{path.name}: corrupt safetensors header ({exc})") from exc
    if 8 + length + max(ends, default=0) > size:
        raise ModelLoadError(f"{path.name}: file is truncated ({size} bytes, tensors need "
                             f"{8 + length + max(ends)}); download or copy it again")
    return header


def read_metadata(path: Path) -> dict[str, str]:
    return read_header(path).get("__metadata__") or {}


def embedded_configs(metadata: dict[str, str]) -> dict[str, dict]:
    """``{component: config}`` from Visage's own files; empty for files from elsewhere."""
    return json.loads(metadata[CONFIGS_KEY]) if CONFIGS_KEY in metadata else {}


# ----------------------------------------------------------------------------------- diffusers -> original

def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def _unet_block_prefixes(config: dict) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every U-Net block, from the config's layout."""
    per = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    out = [("time_embedding.linear_1.", "time_embed.0.", False), ("time_embedding.linear_2.", "time_embed.2.", False),
           ("add_embedding.linear_1.", "label_emb.0.0.", False), ("add_embedding.linear_2.", "label_emb.0.2.", False),
           ("conv_in.", "input_blocks.0.0.", False), ("conv_norm_out.", "out.0.", False),
           ("conv_out.", "out.2.", False),
           ("mid_block.resnets.0.", "middle_block.0.", True), ("mid_block.attentions.0.", "middle_block.1.", False),
           ("mid_block.resnets.1.", "middle_block.2.", True)]
    for i in range(levels):
        for j in range(per):
            n = 1 + i * (per + 1) + j
            out += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0.", True),
                    (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.", False)]
        for j in range(per + 1):
            n = i * (per + 1) + j
            out += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0.", True),
                    (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1.", False)]
        if i < levels - 1:
            up_slot = 2 if "CrossAttn" in config["up_block_types"][i] else 1  # after the attention, if any
            last_up = i * (per + 1) + per
            out += [(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per + 1)}.0.op.", False),
                    (f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{last_up}.{up_slot}.conv.", False)]
    return out


def unet_to_original(state: dict, config: dict) -> dict:
    """diffusers ``UNet2DConditionModel`` keys -> LDM ``model.diffusion_model`` keys (without the prefix)."""
    blocks = _unet_block_prefixes(config)
    out = {}
    for key, value in state.items():
        match = next(((d, o, r) for d, o, r in blocks if key.startswith(d)), None)
        if match is None:
            raise UnsupportedModel(f"U-Net weight {key!r} has no place in the original layout")
        d, o, is_resnet = match
        rest = key[len(d):]
        out[o + (_rename(rest, RESNET_UNET) if is_resnet else rest)] = value
    return out


def _vae_block_prefixes(config: dict) -> list[tuple[str, str, tuple]]:
    levels = len(config["block_out_channels"])
    out = [("encoder.conv_norm_out.", "encoder.norm_out.", ()), ("decoder.conv_norm_out.", "decoder.norm_out.", ())]
    for part in ("encoder", "decoder"):
        out += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", RESNET_VAE),
                (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", RESNET_VAE),
                (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", ATTN_VAE)]
    for i in range(levels):
        up = levels - 1 - i
        out += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", RESNET_VAE),
                (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", ()),
                (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{up}.block.", RESNET_VAE),
                (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample.", ())]
    return out


def vae_to_original(state: dict, config: dict) -> dict:
    """diffusers ``AutoencoderKL`` keys -> LDM VAE keys; attention projections become 1×1 convolutions."""
    blocks = _vae_block_prefixes(config)
    out = {}
    for key, value in state.items():
        d, o, renames = next(((d, o, r) for d, o, r in blocks if key.startswith(d)), ("", "", ()))
        new_key = o + _rename(key[len(d):], renames)
        if renames is ATTN_VAE and value.ndim == 2:
            value = value[:, :, None, None]
        out[new_key] = value
    return out


def clip_to_original(state: dict, config: dict) -> dict:
    """transformers ``CLIPTextModel`` keys -> ``transformer.text_model.*`` (HF CLIP keys under ``text_model``)."""
    return {(k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items() if not k.endswith("position_ids")}


def openclip_to_original(state: dict, config: dict) -> dict:
    """transformers ``CLIPTextModelWithProjection`` keys -> OpenCLIP keys (fused q/k/v ``in_proj``)."""
    import torch

    out = {}
    for key, value in state.items():
        if key.endswith("position_ids") or ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if key in OPENCLIP_TOP:
            out[OPENCLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif ".self_attn.q_proj." in key:
            kind = key.rsplit(".", 1)[1]  # weight | bias
            parts = [state[key.replace(".q_proj.", f".{p}_proj.")] for p in "qkv"]
            layer = key.split(".self_attn.")[0].replace("text_model.encoder.layers.", "transformer.resblocks.")
            out[f"{layer}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        elif key.startswith("text_model.encoder.layers."):
            out[_rename(key.replace("text_model.encoder.layers.", "transformer.resblocks."), OPENCLIP_LAYER)] = value
        else:
            raise UnsupportedModel(f"text encoder 2 weight {key!r} has no place in the OpenCLIP layout")
    return out


def zimage_dit_to_original(state: dict, config: dict) -> dict:
    """diffusers ``ZImageTransformer2DModel`` keys -> original Z-Image keys (q/k/v fused into ``qkv``)."""
    import torch

    out = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            qkv = [state[key.replace(".to_q.", f".to_{p}.")] for p in "qkv"]
            out[key.replace(".attention.to_q.", ".attention.qkv.")] = torch.cat(qkv, dim=0)
        else:
            out[_rename(key, ZIMAGE_DIT)] = value
    return out


CONVERTERS = {"unet": unet_to_original, "vae": vae_to_original, "clip": clip_to_original,
              "openclip": openclip_to_original, "zimage_dit": zimage_dit_to_original,
              "identity": lambda state, config: dict(state)}


# ---------------------------------------------------------------------------------------------- writing

def _config_dict(component) -> dict:
    """A diffusers model's or a transformers model's config as plain JSON data."""
    source = component if hasattr(component, "to_json_string") else component.config
    return json.loads(source.to_json_string())


def _tokenizer_files(tokenizer) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="visage-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def pipeline_to_original(pipe, family: Family | str, components=None) -> tuple[dict, dict[str, dict]]:
    """(tensors in the original single-file layout, {component: config}) of a diffusers pipeline.

    ``components`` limits the output to some of the family's components (default: all of them).
    """
    tensors, configs = {}, {}
    for name, (prefix, kind) in LAYOUTS[Family(family)].items():
        if components is not None and name not in components:
            continue
        component = getattr(pipe, name)
        configs[name] = _config_dict(component)
        for key, value in CONVERTERS[kind](component.state_dict(), configs[name]).items():
            tensors[prefix + key] = value.detach().to("cpu").contiguous()
    return tensors, configs


def save_single_file(pipe, family: Family | str, path: Path, metadata: dict[str, str] | None = None, *,
                     components=None) -> Path:
    """Write ``pipe`` to one ``.safetensors`` in the original layout (see module docstring). Atomic.

    ``components`` (e.g. ``("transformer",)`` for a Z-Image DiT-only file) limits what is written.
    """
    from safetensors.torch import save_file

    family = Family(family)
    path = Path(path)
    tensors, configs = pipeline_to_original(pipe, family, components)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({"format": "pt", FAMILY_KEY: family.value, CONFIGS_KEY: json.dumps(configs)})
    if family is Family.ZIMAGE and "text_encoder" in configs:
        meta[TOKENIZER_KEY] = json.dumps(_tokenizer_files(pipe.tokenizer))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
