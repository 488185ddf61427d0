"""Tiny seeded pipelines for the three families (shapes like diffusers' own fast tests).

Every component is built from a seed of its own inside ``torch.random.fork_rng``, so building a tiny model
neither depends on nor disturbs the global RNG.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from modules.families import Family
from modules.loader.tokenizers import CLIP_VOCAB_SIZE
from modules.tiny.tokenizers import tiny_qwen_tokenizer, write_tiny_clip_tokenizer

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    steps_offset=1)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _tiny_vae(seed: int, latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return _seeded(seed, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=latent_channels, norm_num_groups=32, sample_size=64, **extra))


def _clip_config(hidden: int, projection: int | None = None, layers: int = 2):
    """A tiny CLIP text encoder with the real CLIP vocabulary size (so the real CLIP tokenizer fits it too)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=hidden, intermediate_size=hidden * 2,
                          num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=77,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=projection or hidden,
                          hidden_act="quick_gelu", layer_norm_eps=1e-5)


def _clip_tokenizers(*pad_tokens: str) -> list:
    """The tiny CLIP tokenizer, loaded once per pad token (SDXL's second tokenizer pads with ``!``)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="visage-tiny-clip-") as tmp:
        folder = write_tiny_clip_tokenizer(Path(tmp) / "tok")
        return [CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, pad_token=pad) for pad in pad_tokens]


#: U-Net input channels: latents (4), and for a dedicated inpainting model also the mask (1) and the masked
#: image's latents (4)
INPAINT_CHANNELS = 9


def tiny_sd15(seed: int = 0, inpainting: bool = False):
    """StableDiffusionPipeline: UNet (32, 64), VAE (32, 64), CLIP text hidden 32 (CLIP's 49,408-token
    vocabulary), the tiny CLIP tokenizer, PNDM scheduler. ``inpainting``: a 9-channel U-Net in a
    StableDiffusionInpaintPipeline (a dedicated inpainting model)."""
    import diffusers
    from diffusers import PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = _seeded(seed, lambda: UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
        in_channels=INPAINT_CHANNELS if inpainting else 4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4))
    (tokenizer,) = _clip_tokenizers("<|endoftext|>")
    cls = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    return cls(
        vae=_tiny_vae(seed + 1, scaling_factor=0.18215),
        text_encoder=_seeded(seed + 2, lambda: CLIPTextModel(_clip_config(32))),
        tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULER, skip_prk_steps=True, set_alpha_to_one=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tiny_sdxl(seed: int = 0, inpainting: bool = False):
    """StableDiffusionXLPipeline: two text encoders (hidden 32 and 64, so a single file tells them apart).
    ``inpainting``: a 9-channel U-Net in a StableDiffusionXLInpaintPipeline."""
    import diffusers
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = _seeded(seed, lambda: UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
        in_channels=INPAINT_CHANNELS if inpainting else 4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=32 + 64))
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULER, timestep_spacing="leading")
    tokenizer, tokenizer_2 = _clip_tokenizers("<|endoftext|>", "!")
    cls = diffusers.StableDiffusionXLInpaintPipeline if inpainting else diffusers.StableDiffusionXLPipeline
    return cls(
        vae=_tiny_vae(seed + 1, scaling_factor=0.13025),
        text_encoder=_seeded(seed + 2, lambda: CLIPTextModel(_clip_config(32))),
        text_encoder_2=_seeded(seed + 3, lambda: CLIPTextModelWithProjection(_clip_config(64, projection=32))),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        unet=unet, scheduler=scheduler, image_encoder=None, feature_extractor=None)


def _tiny_zimage_transformer(seed: int):
    from diffusers import ZImageTransformer2DModel

    def build():
        model = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=32, rope_theta=256.0,
            t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        with torch.no_grad():  # the pad tokens start as torch.empty: give them seeded values
            model.x_pad_token.normal_(std=0.02)
            model.cap_pad_token.normal_(std=0.02)
        return model

    return _seeded(seed, build)


def tiny_zimage(seed: int = 0):
    """ZImagePipeline: DiT dim 32, 16-channel VAE, Qwen3 text encoder hidden 32, tiny Qwen tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = tiny_qwen_tokenizer()
    te_config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                            rms_norm_eps=1e-6, tie_word_embeddings=True)
    return ZImagePipeline(
        transformer=_tiny_zimage_transformer(seed),
        vae=_tiny_vae(seed + 1, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                      use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_seeded(seed + 2, lambda: Qwen3Model(te_config)),
        tokenizer=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0))


BUILDERS = {Family.SD15: tiny_sd15, Family.SDXL: tiny_sdxl, Family.ZIMAGE: tiny_zimage}


def tiny_pipeline(family: Family | str, seed: int = 0, inpainting: bool = False):
    """The tiny in-memory pipeline of ``family`` (``inpainting``: SD1.5/SDXL with a 9-channel U-Net)."""
    family = Family(family)
    if not inpainting:
        return BUILDERS[family](seed)
    if family is Family.ZIMAGE:
        raise ValueError("Z-Image has no dedicated inpainting models")
    return BUILDERS[family](seed, inpainting=True)
