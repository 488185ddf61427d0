"""txt2img on a loaded diffusers pipeline, in numbered steps."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from modules.errors import Interrupted
from modules.families import Family
from modules.generation.encoding import Embeds, encode_prompts, uses_cfg
from modules.generation.params import MAX_SEED, GenerationRequest
from modules.generation.samplers import make_scheduler
from modules.jobs import JobContext
from modules.taesd import CPU_PREVIEW_MAX_SIDE, preview_latents

#: (prompt, negative, do_cfg, clip_skip) -> embeds; the engine passes one that goes through the cache
EncodeFn = Callable[[str, str, bool, int], Embeds]


@dataclass
class Txt2ImgOutput:
    images: list  # PIL images
    seeds: list[int]


def batch_seeds(seed: int, count: int, rng: random.Random | None = None) -> list[int]:
    """A1111 semantics: image i uses seed + i; -1 picks a random base seed."""
    if seed == -1:
        seed = (rng or random.SystemRandom()).randrange(0, MAX_SEED - count)
    return [seed + i for i in range(count)]


class LatentDecoder(Protocol):
    """TAESD (torch or ONNX): denoiser-space latents -> PIL images. See :mod:`modules.taesd`."""

    def decode(self, latents) -> list: ...


def txt2img(pipe, family: Family, req: GenerationRequest, ctx: JobContext, *,
            device: torch.device, encode: EncodeFn | None = None,
            tae: LatentDecoder | None = None) -> Txt2ImgOutput:
    """``req`` must already have family defaults filled and be checked.

    ``tae`` (needed for ``req.preview_every`` and ``req.decoder == "taesd"``) decodes live previews,
    reported as ``ctx.report(..., preview=PIL image)``, and the final images when TAESD is chosen."""
    # 1. seeds: one per image, fixed up front so they can be reported
    seeds = batch_seeds(req.seed, req.batch_size * req.batch_count)

    # 2. sampler, built from the model's own scheduler config
    pipe.scheduler = make_scheduler(req.sampler, pipe.scheduler.config)

    # 3. prompt embeddings (once for all batches; the cache sits behind `encode`)
    embeds, do_cfg = request_embeds(pipe, family, req, ctx, encode=encode, device=device)

    # 4. denoise and decode, batch by batch, reporting each step and honouring Interrupt
    total = req.steps * req.batch_count
    fast_decode = req.decoder == "taesd" and tae is not None
    preview_side = CPU_PREVIEW_MAX_SIDE if device.type == "cpu" else None  # full size where decoding is cheap
    images: list = []
    for b in range(req.batch_count):
        done_before = b * req.steps

        def on_step_end(_pipe, i, _t, kwargs, _done=done_before):
            preview = None
            if (tae is not None and req.preview_every and (i + 1) % req.preview_every == 0
                    and i + 1 < req.steps and kwargs.get("latents") is not None):
                preview = tae.decode(preview_latents(kwargs["latents"][:1], preview_side))[0]
            ctx.report("denoising", _done + i + 1, total, preview=preview)
            if ctx.cancelled:
                raise Interrupted(_done + i + 1, total)
            return {}

        ctx.check_cancelled()
        batch = seeds[b * req.batch_size:(b + 1) * req.batch_size]
        generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
        out = pipe(
            **call_embeds(embeds, do_cfg),
            height=req.height, width=req.width, num_inference_steps=req.steps,
            guidance_scale=req.cfg_scale, num_images_per_prompt=req.batch_size,
            generator=generators, output_type="latent" if fast_decode else "pil",
            callback_on_step_end=on_step_end,
        )
        images.extend(tae.decode(out.images) if fast_decode else out.images)
    ctx.report("decoding", total, total)
    return Txt2ImgOutput(images=images, seeds=seeds)


def request_embeds(pipe, family: Family, req: GenerationRequest, ctx: JobContext, *, encode: EncodeFn | None,
                   device: torch.device) -> tuple[Embeds, bool]:
    """The "encoding" step every pass shares: ``req``'s prompt embeddings through ``encode`` (the embedding cache
    sits behind it; None: encode directly) and whether classifier-free guidance is on."""
    do_cfg = uses_cfg(family, req.cfg_scale)
    ctx.report("encoding")
    if encode is None:
        def encode(p, n, cfg, skip):
            return encode_prompts(pipe, family, p, n, do_cfg=cfg, clip_skip=skip, device=device)
    return encode(req.prompt, req.negative_prompt, do_cfg, req.clip_skip), do_cfg


def call_embeds(embeds: Embeds, do_cfg: bool) -> Embeds:
    """Drop the negative entries when CFG is off (pipelines reject unused negatives for some families)."""
    if do_cfg:
        return dict(embeds)
    return {k: v for k, v in embeds.items() if not k.startswith("negative_")}
