"""Hires fix (A1111's txt2img "Hires. fix") on a loaded diffusers pipeline, in numbered steps.

1. first pass: txt2img at the request's width x height, kept as latents;
2. upscale to :meth:`GenerationRequest.hires_size`: ``Latent`` / ``Latent (nearest)`` interpolate the latents
   (bilinear / nearest, as A1111); ``Lanczos`` / ``Nearest`` decode with the VAE, resize with PIL and let the
   img2img pipeline encode the result again;
3. second pass: img2img (the pipeline built with ``from_pipe`` from the loaded one's components: no new weights)
   with its own steps (``hr_second_pass_steps``, 0 = ``steps``) and ``hr_denoising_strength``.

Progress counts both passes as one run of steps (``denoising`` then ``hires``). Model upscalers (ESRGAN & co.
through spandrel) are not offered: spandrel needs torchvision, which does not import beside our torch build.
"""
from __future__ import annotations

import inspect
import torch
import torch.nn.functional as F
from PIL import Image

from modules.errors import Interrupted
from modules.families import Family
from modules.generation.img2img import derived_pipe
from modules.generation.params import GenerationRequest
from modules.generation.samplers import make_scheduler
from modules.generation.txt2img import (
    EncodeFn, LatentDecoder, Txt2ImgOutput, batch_seeds, call_embeds, request_embeds,
)
from modules.jobs import JobContext
from modules.taesd import CPU_PREVIEW_MAX_SIDE, preview_latents

#: latent upscalers -> torch interpolation mode; the others resize decoded images with PIL
LATENT_MODES = {"Latent": "bilinear", "Latent (nearest)": "nearest"}
PIL_MODES = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


def second_pass_steps(req: GenerationRequest) -> tuple[int, int]:
    """(steps the second pass is scheduled for, steps it actually runs: that x the denoising strength, rounded
    down as diffusers does). A denoise so low that no step would run schedules more steps, so that one runs."""
    steps = int(req.hr_second_pass_steps) or int(req.steps)
    strength = float(req.hr_denoising_strength)
    while int(steps * strength) < 1:
        steps = max(steps + 1, int(steps * 1.5))
    return steps, min(int(steps * strength), steps)


def hires_params(req: GenerationRequest) -> dict:
    """A1111's infotext keys for a hires fix (none when it is off). ``Size`` stays the first pass's."""
    if not req.enable_hr or req.init_image is not None:
        return {}
    params: dict = {"Denoising strength": req.hr_denoising_strength}
    if req.hr_resize_x or req.hr_resize_y:
        params["Hires resize"] = f"{req.hr_resize_x}x{req.hr_resize_y}"
    else:
        params["Hires upscale"] = _number(req.hr_scale)
    if req.hr_second_pass_steps:
        params["Hires steps"] = req.hr_second_pass_steps
    params["Hires upscaler"] = req.hr_upscaler
    return params


def _number(value: float):
    return int(value) if float(value).is_integer() else value


class _Steps:
    """Both passes' steps as one count: a step callback per pipeline call, previews, Interrupt."""

    def __init__(self, ctx: JobContext, total: int, tae, req: GenerationRequest, device: torch.device):
        self.ctx, self.total, self.tae, self.req, self.done = ctx, total, tae, req, 0
        self.preview_side = CPU_PREVIEW_MAX_SIDE if device.type == "cpu" else None

    def callback(self, phase: str, n_steps: int):
        start = self.done

        def on_step_end(_pipe, i, _t, kwargs):
            preview = None
            every = self.req.preview_every
            if (self.tae is not None and every and (i + 1) % every == 0 and i + 1 < n_steps
                    and kwargs.get("latents") is not None):
                preview = self.tae.decode(preview_latents(kwargs["latents"][:1], self.preview_side))[0]
            self.done = min(start + i + 1, start + n_steps, self.total)
            self.ctx.report(phase, self.done, self.total, preview=preview)
            if self.ctx.cancelled:
                raise Interrupted(self.done, self.total)
            return {}

        return on_step_end

    def end_pass(self, start: int, n_steps: int) -> None:
        self.done = min(start + n_steps, self.total)


def hires_fix(pipe, family: Family, req: GenerationRequest, ctx: JobContext, *, device: torch.device,
              encode: EncodeFn | None = None, tae: LatentDecoder | None = None,
              cache: dict | None = None) -> Txt2ImgOutput:
    """txt2img with the hires fix; ``req`` checked (``enable_hr``), with family defaults."""
    # 1. seeds, sizes, steps
    seeds = batch_seeds(req.seed, req.batch_size * req.batch_count)
    width, height = req.hires_size(family)
    hr_steps, hr_run = second_pass_steps(req)
    steps = _Steps(ctx, req.steps * req.batch_count + hr_run * len(seeds), tae, req, device)
    latent_mode = LATENT_MODES.get(req.hr_upscaler)
    # 2. prompt embeddings through the cache (once, for both passes)
    raw, do_cfg = request_embeds(pipe, family, req, ctx, encode=encode, device=device)
    embeds = call_embeds(raw, do_cfg)
    # 3. first pass at the base size: latents (latent upscalers) or decoded images (PIL upscalers)
    pipe.scheduler = make_scheduler(req.sampler, pipe.scheduler.config)
    firsts: list = []
    for b in range(req.batch_count):
        ctx.check_cancelled()
        batch = seeds[b * req.batch_size:(b + 1) * req.batch_size]
        start = steps.done
        out = pipe(**embeds, height=req.height, width=req.width, num_inference_steps=req.steps,
                   guidance_scale=req.cfg_scale, num_images_per_prompt=req.batch_size,
                   generator=[torch.Generator("cpu").manual_seed(s) for s in batch],
                   output_type="latent" if latent_mode else "pil",
                   callback_on_step_end=steps.callback("denoising", req.steps))
        steps.end_pass(start, req.steps)
        # latents stay batched tensors: split them into one [1, C, h, w] per image
        firsts.extend([out.images[i:i + 1] for i in range(len(batch))] if latent_mode else out.images)
    # 4. upscale each image to the hires size
    ctx.report("upscaling", steps.done, steps.total)
    if latent_mode:
        scale = pipe.vae_scale_factor
        uppers = [F.interpolate(lat, size=(height // scale, width // scale), mode=latent_mode) for lat in firsts]
    else:
        uppers = [im.convert("RGB").resize((width, height), PIL_MODES[req.hr_upscaler]) for im in firsts]
    # 5. second pass: img2img at the hires size, image by image (each with its own seed)
    run = derived_pipe(pipe, family, inpaint=False, cache=cache)
    run.scheduler = make_scheduler(req.sampler, pipe.scheduler.config)
    accepted = inspect.signature(run.__call__).parameters
    extra = {"height": height, "width": width} if "height" in accepted else {}
    fast_decode = req.decoder == "taesd" and tae is not None
    images: list = []
    for image, seed in zip(uppers, seeds):
        ctx.check_cancelled()
        start = steps.done
        out = run(**embeds, image=image, strength=req.hr_denoising_strength, num_inference_steps=hr_steps,
                  guidance_scale=req.cfg_scale, num_images_per_prompt=1,
                  generator=[torch.Generator("cpu").manual_seed(seed)],
                  output_type="latent" if fast_decode else "pil",
                  callback_on_step_end=steps.callback("hires", hr_run), **extra)
        steps.end_pass(start, hr_run)
        images.extend(tae.decode(out.images) if fast_decode else out.images)
    ctx.report("decoding", steps.total, steps.total)
    return Txt2ImgOutput(images=images, seeds=seeds)


def run_hires(backend, req: GenerationRequest, ctx: JobContext, *, encode, tae) -> Txt2ImgOutput:
    """The hires fix on a loaded backend: its own ``hires_fix`` method when it has one, else the diffusers
    pipeline it wraps (``Engine.prepare`` refuses the hires fix on backends without img2img)."""
    method = getattr(backend, "hires_fix", None)
    if method is not None:
        return method(req, ctx, encode=encode, tae=tae)
    return hires_fix(backend.pipe, backend.family, req, ctx, device=backend.device, encode=encode, tae=tae)
