"""img2img and inpainting on a loaded diffusers pipeline, in numbered steps.

The img2img / inpaint pipelines are built from the loaded pipeline's own components with ``from_pipe``: no
weights are loaded or copied, so LoRAs applied to the loaded pipeline apply here too.
"""
from __future__ import annotations

import inspect

import diffusers
import torch

from modules.errors import Interrupted
from modules.families import Family
from modules.generation.encoding import encode_prompts, uses_cfg
from modules.generation.masks import PreparedImages, paste_back, prepare_images
from modules.generation.params import GenerationRequest
from modules.generation.samplers import make_scheduler
from modules.generation.txt2img import EncodeFn, LatentDecoder, Txt2ImgOutput, batch_seeds, call_embeds
from modules.jobs import JobContext
from modules.taesd import CPU_PREVIEW_MAX_SIDE, preview_latents

#: (family, inpainting) -> the diffusers pipeline class built with from_pipe
PIPELINES = {
    (Family.SD15, False): "StableDiffusionImg2ImgPipeline", (Family.SD15, True): "StableDiffusionInpaintPipeline",
    (Family.SDXL, False): "StableDiffusionXLImg2ImgPipeline", (Family.SDXL, True): "StableDiffusionXLInpaintPipeline",
    (Family.ZIMAGE, False): "ZImageImg2ImgPipeline", (Family.ZIMAGE, True): "ZImageInpaintPipeline",
}


def derived_pipe(pipe, family: Family, *, inpaint: bool, cache: dict | None = None):
    """The img2img (or inpaint) pipeline sharing ``pipe``'s components (the same module objects).

    ``from_pipe`` casts the new pipeline with ``.to(dtype)`` (float32 unless told): it is given ``pipe``'s own
    dtype, so no shared weight is converted or copied. ``cache`` keeps one per kind while the components match."""
    cls = getattr(diffusers, PIPELINES[(family, inpaint)])
    if isinstance(pipe, cls):
        return pipe
    derived = (cache or {}).get(inpaint)
    if derived is not None and all(derived.components.get(k) is v for k, v in pipe.components.items()
                                   if k in derived.components):
        return derived
    derived = cls.from_pipe(pipe, torch_dtype=pipe.dtype)
    derived.set_progress_bar_config(disable=True)
    if cache is not None:
        cache[inpaint] = derived
    return derived


def steps_run(req: GenerationRequest) -> int:
    """Denoising steps actually run (diffusers and A1111: steps x denoising strength, rounded down)."""
    return min(int(req.steps * req.denoising_strength), req.steps)


def img2img(pipe, family: Family, req: GenerationRequest, ctx: JobContext, *, device: torch.device,
            encode: EncodeFn | None = None, tae: LatentDecoder | None = None,
            inpaint_model: bool = False, cache: dict | None = None) -> Txt2ImgOutput:
    """img2img (``req.mask`` None) or inpainting; ``req`` checked, with family defaults. ``inpaint_model``: the
    loaded model is a dedicated (9-channel) inpainting model, whose pipeline also runs plain img2img."""
    # 1. seeds, and the images the pipeline gets (resize mode, mask blur / invert, only-masked crop, fill)
    seeds = batch_seeds(req.seed, req.batch_size * req.batch_count)
    ctx.report("preparing image")
    prepared = prepare_images(req)
    inpaint = prepared.mask is not None or inpaint_model
    run = derived_pipe(pipe, family, inpaint=inpaint, cache=cache)
    # 2. sampler, from the model's own scheduler config
    run.scheduler = make_scheduler(req.sampler, pipe.scheduler.config)
    # 3. prompt embeddings through the cache
    do_cfg = uses_cfg(family, req.cfg_scale)
    ctx.report("encoding")
    if encode is None:
        def encode(p, n, cfg, skip):
            return encode_prompts(pipe, family, p, n, do_cfg=cfg, clip_skip=skip, device=device)
    embeds = call_embeds(encode(req.prompt, req.negative_prompt, do_cfg, req.clip_skip), do_cfg)
    # 4. denoise (or, when no step would run, only the VAE round trip), batch by batch
    n_steps = steps_run(req)
    if n_steps == 0:
        images = [vae_round_trip(pipe, prepared.image, device) for _ in seeds]
    else:
        images = _denoise(run, req, prepared, embeds, seeds, n_steps, ctx, tae=tae, device=device,
                          inpaint=inpaint)
    # 5. paste back through the blurred mask: outside it the result is the input, exactly
    if prepared.paste_mask is not None:
        images = [paste_back(prepared.original, im, prepared.paste_mask, prepared.box) for im in images]
    ctx.report("decoding", ctx.progress.total, ctx.progress.total)
    return Txt2ImgOutput(images=images, seeds=seeds)


def _denoise(run, req, prepared: PreparedImages, embeds, seeds, n_steps, ctx, *, tae, device, inpaint):
    total = n_steps * req.batch_count
    fast_decode = req.decoder == "taesd" and tae is not None
    preview_side = CPU_PREVIEW_MAX_SIDE if device.type == "cpu" else None
    accepted = inspect.signature(run.__call__).parameters
    extra = {"mask_image": prepared.mask} if inpaint else {}
    if inpaint and prepared.mask is None:  # a dedicated inpainting model doing img2img: repaint everything
        extra["mask_image"] = prepared.image.convert("L").point(lambda _v: 255)
    if "height" in accepted:
        extra |= {"height": req.height, "width": req.width}
    images: list = []
    for b in range(req.batch_count):
        done_before = b * n_steps

        def on_step_end(_pipe, i, _t, kwargs, _done=done_before):
            preview = None
            if (tae is not None and req.preview_every and (i + 1) % req.preview_every == 0
                    and i + 1 < n_steps and kwargs.get("latents") is not None):
                preview = tae.decode(preview_latents(kwargs["latents"][:1], preview_side))[0]
            ctx.report("denoising", min(_done + i + 1, total), total, preview=preview)
            if ctx.cancelled:
                raise Interrupted(_done + i + 1, total)
            return {}

        ctx.check_cancelled()
        batch = seeds[b * req.batch_size:(b + 1) * req.batch_size]
        out = run(**embeds, image=prepared.image, strength=req.denoising_strength,
                  num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
                  num_images_per_prompt=req.batch_size,
                  generator=[torch.Generator("cpu").manual_seed(s) for s in batch],
                  output_type="latent" if fast_decode else "pil", callback_on_step_end=on_step_end, **extra)
        images.extend(tae.decode(out.images) if fast_decode else out.images)
    return images


@torch.no_grad()
def vae_round_trip(pipe, image, device: torch.device):
    """Encode and decode ``image`` with the model's VAE (what denoising strength 0 returns)."""
    vae = pipe.vae
    x = pipe.image_processor.preprocess(image).to(device=device, dtype=vae.dtype)
    latents = vae.encode(x).latent_dist.mode()
    decoded = vae.decode(latents).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]
