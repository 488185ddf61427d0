"""Prompt encoding per family: produces exactly the ``prompt_embeds``-style keyword arguments the
diffusers pipeline takes. This is the seam where the embedding cache plugs in."""
from __future__ import annotations

from typing import Any

import torch

from modules.errors import InvalidRequest
from modules.families import Family
from modules.messages import Message

Embeds = dict[str, Any]  # tensors (SD, SDXL) or lists of tensors (Z-Image)


def uses_cfg(family: Family, cfg_scale: float) -> bool:
    """Whether the pipeline will run classifier-free guidance (mirrors each pipeline's own rule)."""
    return cfg_scale > 0 if family == Family.ZIMAGE else cfg_scale > 1


def diffusers_clip_skip(a1111_clip_skip: int) -> int | None:
    """A1111 counts from 1 (= last layer); diffusers counts layers skipped (None = none)."""
    return a1111_clip_skip - 1 if a1111_clip_skip > 1 else None


@torch.no_grad()
def encode_prompts(pipe, family: Family, prompt: str, negative: str, *, do_cfg: bool,
                   clip_skip: int, device: torch.device) -> Embeds:
    """Encode one prompt pair for one image; pipelines repeat embeds per ``num_images_per_prompt``."""
    if family == Family.ZIMAGE:
        pos, neg = pipe.encode_prompt(prompt=prompt, device=device, do_classifier_free_guidance=do_cfg,
                                      negative_prompt=negative)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg if do_cfg else None}
    skip = diffusers_clip_skip(clip_skip)
    layers = getattr(getattr(pipe.text_encoder, "config", None), "num_hidden_layers", None)
    if skip is not None and isinstance(layers, int) and skip >= layers:
        raise InvalidRequest("clip_skip", Message("rule.clip_skip_layers", layers=layers))
    if family == Family.SDXL:
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            negative_prompt=negative, clip_skip=skip)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}
    if skip is not None:
        # diffusers 0.42's SD1.5 clip-skip path reads `text_encoder.text_model`, gone in transformers 5
        pos = _clip_hidden_state(pipe, prompt, skip, device)
        neg = _clip_hidden_state(pipe, negative, skip, device) if do_cfg else None
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}
    pos, neg = pipe.encode_prompt(prompt, device, 1, do_cfg, negative_prompt=negative)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}


def _clip_hidden_state(pipe, text: str, skip: int, device: torch.device) -> torch.Tensor:
    """SD1.x clip skip as A1111 does it: an earlier CLIP layer, then the final layer norm."""
    tokens = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    encoder = pipe.text_encoder
    mask = tokens.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) else None
    out = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
    hidden = encoder.final_layer_norm(out.hidden_states[-(skip + 1)])
    return hidden.to(dtype=encoder.dtype, device=device)
