"""Prompt encoding per family: produces exactly the ``prompt_embeds``-style keyword arguments the
diffusers pipeline takes. This is the seam where the embedding cache plugs in."""
from __future__ import annotations

from typing import Any

import torch

from modules.families import Family

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
    if family == Family.SDXL:
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            negative_prompt=negative, clip_skip=skip)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}
    pos, neg = pipe.encode_prompt(prompt, device, 1, do_cfg, negative_prompt=negative, clip_skip=skip)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}
