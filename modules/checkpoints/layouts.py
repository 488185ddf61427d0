"""Key layouts of original (A1111 / LDM / sgm / ComfyUI) single-file checkpoints. Torch-free.

* sd15: ``model.diffusion_model.*`` (LDM U-Net), ``first_stage_model.*`` (LDM VAE),
  ``cond_stage_model.transformer.text_model.*`` (CLIP-L); SD 2.x has ``cond_stage_model.model.*`` (OpenCLIP).
* sdxl: the same U-Net/VAE prefixes, ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and
  ``conditioner.embedders.1.model.*`` (OpenCLIP bigG: ``transformer.resblocks.N.attn.in_proj_weight``,
  ``ln_final``, ``positional_embedding``, ``text_projection`` stored transposed); the refiner has only
  ``conditioner.embedders.0.model.*``.
* zimage ("all-in-one", ComfyUI style): ``model.diffusion_model.*`` (original Z-Image DiT keys: fused
  ``attention.qkv``, ``attention.out``, ``q_norm``/``k_norm``, ``x_embedder``, ``final_layer``),
  ``text_encoders.qwen3.*`` (transformers' ``Qwen3Model`` keys) and ``vae.*`` (LDM VAE layout).

The block tables map diffusers names to original names; the registry (identification), the loader and
single-file saving (:mod:`modules.checkpoints.convert`) and the LoRA patcher (kohya sgm names) share them.
"""
from __future__ import annotations

from modules.errors import UnsupportedModel
from modules.families import Family

DENOISER_PREFIX = "model.diffusion_model."
UNET_PREFIX = DENOISER_PREFIX
DIT_PREFIX = DENOISER_PREFIX
LDM_VAE_PREFIX = "first_stage_model."
ZIMAGE_VAE_PREFIX = "vae."
ZIMAGE_TE_PREFIX = "text_encoders.qwen3."
SD15_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SD_TEXT_PREFIX = "cond_stage_model."
SDXL_EMBEDDERS_PREFIX = "conditioner.embedders."
SDXL_CLIP_EMBEDDER = "conditioner.embedders.0."
SDXL_OPENCLIP_EMBEDDER = "conditioner.embedders.1."
SDXL_CLIP_PREFIX = SDXL_CLIP_EMBEDDER + "transformer."
SDXL_OPENCLIP_PREFIX = SDXL_OPENCLIP_EMBEDDER + "model."
REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."
LDM_UNET_BLOCKS = ("input_blocks.", "middle_block.", "output_blocks.")

#: component name -> (key prefix in the file, converter name) per family
LAYOUTS: dict[Family, dict[str, tuple[str, str]]] = {
    Family.SD15: {"unet": (UNET_PREFIX, "unet"), "vae": (LDM_VAE_PREFIX, "vae"),
                  "text_encoder": (SD15_CLIP_PREFIX, "clip")},
    Family.SDXL: {"unet": (UNET_PREFIX, "unet"), "vae": (LDM_VAE_PREFIX, "vae"),
                  "text_encoder": (SDXL_CLIP_PREFIX, "clip"),
                  "text_encoder_2": (SDXL_OPENCLIP_PREFIX, "openclip")},
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


def rename(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def _layers_per_block(config) -> int:
    per = config["layers_per_block"]
    if isinstance(per, (list, tuple)):
        if len(set(per)) != 1:
            raise UnsupportedModel("U-Nets with a different layer count per block have no original layout")
        per = per[0]
    return int(per)


def unet_block_prefixes(config) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every U-Net block, from a UNet2DConditionModel config."""
    per = _layers_per_block(config)
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


def original_unet_key(key: str, blocks: list[tuple[str, str, bool]]) -> str | None:
    """The LDM name of a diffusers U-Net key or ``.``-terminated module path (None: no place there)."""
    for d, o, is_resnet in blocks:
        if key.startswith(d):
            rest = key[len(d):]
            return o + (rename(rest, RESNET_UNET) if is_resnet else rest)
    return None


def vae_block_prefixes(config) -> list[tuple[str, str, tuple]]:
    """(diffusers prefix, LDM prefix, renames) for every AutoencoderKL block."""
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
