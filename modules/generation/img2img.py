"""img2img and inpainting on a loaded diffusers pipeline, in numbered steps.

The img2img / inpaint pipelines are built from the loaded pipeline's own components with ``from_pipe``: no
weights are loaded or copied, so LoRAs applied to the loaded pipeline apply here too.
"""
from __future__ import annotations

import inspect
from dataclasses import replace

import diffusers
import torch
from PIL import Image

from modules.errors import Interrupted
from modules.families import Family
from modules.generation.masks import LATENT_NOISE, LATENT_NOTHING, PreparedImages, paste_back, prepare_images
from modules.generation.params import GenerationRequest
from modules.generation.samplers import make_scheduler
from modules.generation.txt2img import (
    EncodeFn, LatentDecoder, Txt2ImgOutput, batch_seeds, call_embeds, request_embeds,
)
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
    # 2. sampler, from the model's own scheduler config (masked content "latent noise" / "latent nothing":
    #    the masked area of the initial latents is replaced before noising, see fill_masked_latents)
    run.scheduler = make_scheduler(req.sampler, pipe.scheduler.config)
    if prepared.mask is not None:
        fill_masked_latents(run.scheduler, prepared.mask, req.inpainting_fill)
    # 3. prompt embeddings through the cache
    raw, do_cfg = request_embeds(pipe, family, req, ctx, encode=encode, device=device)
    embeds = call_embeds(raw, do_cfg)
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


def txt2img_on_inpaint_model(pipe, family: Family, req: GenerationRequest, ctx: JobContext, **kwargs):
    """txt2img on a dedicated inpainting model, as A1111 does it: its inpaint pipeline with the whole picture
    masked (so the masked-image latents are the VAE's grey) and denoising from pure noise (strength 1).
    ``kwargs``: those of :func:`img2img`."""
    grey = Image.new("RGB", (req.width, req.height), (127, 127, 127))
    req = replace(req, init_image=grey, mask=None, denoising_strength=1.0, resize_mode=0)
    return img2img(pipe, family, req, ctx, inpaint_model=True, **kwargs)


def latent_mask(mask: Image.Image, like: torch.Tensor) -> torch.Tensor:
    """``mask`` (white = repaint) at the latents' size, rounded to 0/1 as A1111 does, shaped (1, 1, h, w)."""
    import numpy as np

    h, w = like.shape[-2:]
    small = np.asarray(mask.convert("L").resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(np.around(small)).to(device=like.device, dtype=like.dtype)[None, None]


def fill_masked_latents(scheduler, mask: Image.Image, fill: int) -> None:
    """Masked content "latent noise" (2) / "latent nothing" (3), as A1111: before the initial latents are
    noised, their masked area is replaced with the seed's noise / zeros. Done by wrapping this scheduler
    instance's ``add_noise`` (SD1.5, SDXL) and ``scale_noise`` (flow matching: Z-Image), which every img2img /
    inpaint pipeline calls on the image latents; the per-step blending calls only use the latents outside the
    mask, which are left as they are. Other ``fill`` values: nothing changes."""
    if fill not in (LATENT_NOISE, LATENT_NOTHING):
        return

    def filled(original, noise):
        if original is None or noise is None or original.dim() != 4:
            return original
        m = latent_mask(mask, original)
        inside = noise.to(original.dtype) if fill == LATENT_NOISE else torch.zeros_like(original)
        return original * (1 - m) + inside * m

    if hasattr(scheduler, "add_noise"):
        add_noise = scheduler.add_noise

        def _add_noise(original_samples, noise, timesteps):
            return add_noise(filled(original_samples, noise), noise, timesteps)
        scheduler.add_noise = _add_noise
    if hasattr(scheduler, "scale_noise"):
        scale_noise = scheduler.scale_noise

        def _scale_noise(sample, timestep, noise=None):
            return scale_noise(filled(sample, noise), timestep, noise)
        scheduler.scale_noise = _scale_noise


@torch.no_grad()
def vae_round_trip(pipe, image, device: torch.device):
    """Encode and decode ``image`` with the model's VAE (what denoising strength 0 returns)."""
    vae = pipe.vae
    x = pipe.image_processor.preprocess(image).to(device=device, dtype=vae.dtype)
    latents = vae.encode(x).latent_dist.mode()
    decoded = vae.decode(latents).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]
