"""diffusers / transformers state dicts -> the original single-file layout, one converter per component.

The tables live in :mod:`modules.checkpoints.layouts`. Torch-free at import (torch is imported where
tensors are concatenated).
"""
from __future__ import annotations

from modules.checkpoints.layouts import (
    ATTN_VAE, OPENCLIP_LAYER, OPENCLIP_TOP, ZIMAGE_DIT, original_unet_key, rename, unet_block_prefixes,
    vae_block_prefixes,
)
from modules.errors import UnsupportedModel


def unet_to_original(state: dict, config: dict) -> dict:
    """diffusers ``UNet2DConditionModel`` keys -> LDM ``model.diffusion_model`` keys (without the prefix)."""
    blocks = unet_block_prefixes(config)
    out = {}
    for key, value in state.items():
        new_key = original_unet_key(key, blocks)
        if new_key is None:
            raise UnsupportedModel(f"U-Net weight {key!r} has no place in the original layout")
        out[new_key] = value
    return out


def vae_to_original(state: dict, config: dict) -> dict:
    """diffusers ``AutoencoderKL`` keys -> LDM VAE keys; attention projections become 1×1 convolutions."""
    blocks = vae_block_prefixes(config)
    out = {}
    for key, value in state.items():
        d, o, renames = next(((d, o, r) for d, o, r in blocks if key.startswith(d)), ("", "", ()))
        new_key = o + rename(key[len(d):], renames)
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
            out[rename(key.replace("text_model.encoder.layers.", "transformer.resblocks."), OPENCLIP_LAYER)] = value
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
            out[rename(key, ZIMAGE_DIT)] = value
    return out


CONVERTERS = {"unet": unet_to_original, "vae": vae_to_original, "clip": clip_to_original,
              "openclip": openclip_to_original, "zimage_dit": zimage_dit_to_original,
              "identity": lambda state, config: dict(state)}
