"""The generation job: a :class:`~modules.engine.prepare.PreparedJob` run on the worker thread, in numbered steps."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from modules import __version__
from modules.backends.base import Capability
from modules.embedding_cache import EmbeddingCache, text_encoder_state
from modules.engine.prepare import PreparedJob
from modules.engine.warmup import embedding_key
from modules.errors import OutOfMemory
from modules.extensions.postprocess import run_postprocessors
from modules.generation.hires import hires_params, run_hires
from modules.generation.params import GenerationRequest, GenerationResult
from modules.jobs import JobContext
from modules.lora import parse_prompt_loras
from modules.manager import LoadedModel, ModelManager, release_memory
from modules.messages import Message
from modules.outputs.infotext import build_infotext
from modules.outputs.saving import save_png
from modules.registry.entry import ModelEntry

log = logging.getLogger(__name__)


@dataclass
class GenerationRunner:
    """What a generation job touches, built once by the engine."""

    manager: ModelManager
    embed_cache: EmbeddingCache
    ensure_hash: Callable[[ModelEntry], object]
    options_for: Callable[[str], dict]  # extension name -> its options
    outputs_dir: Callable[[], Path]
    device: torch.device
    models_dir: Callable[[], Path] | None = None  # where face-detection/ lives (default: the outputs' Folders)

    def run(self, job: PreparedJob, ctx: JobContext) -> GenerationResult:
        start = time.perf_counter()
        req = job.request
        clean_prompt, _tags = parse_prompt_loras(req.prompt)  # tags stay in the infotext, as in A1111
        with self.manager.lock:
            # 1. the model on the device, its LoRAs applied ([] restores the base)
            loaded = self.manager.activate(job.entry, on_phase=ctx.report)
            self.ensure_hash(loaded.entry)
            report = loaded.backend.apply_loras(list(job.loras))
            # 2. the capability (txt2img, img2img, inpaint), prompt embeddings through the cache; 3. post-processors
            images, seeds, post = self._sample(loaded, job, replace(req, prompt=clean_prompt), report, ctx)
        # 4. infotext and saving
        notes = list(report.notes) + post.notes
        if report.unmatched_count:
            notes.append(Message("note.lora_unmatched", count=report.unmatched_count,
                                 examples=", ".join(report.unmatched_examples)))
            log.warning("LoRA: %s", notes[-1])
        extra = {"Lora hashes": ", ".join(f"{a.name}: {a.hash}" for a in report.active)} if report.active else {}
        ctx.report("saving", ctx.progress.total, ctx.progress.total)
        infotexts, paths = [], []
        for image, seed, post_params in zip(images, seeds, post.infotexts):
            params = infotext_params(req, loaded.entry, seed) | extra
            params |= {k: v for k, v in post_params.items() if k not in params}
            params["Version"] = params.pop("Version")
            text = build_infotext(req.prompt, req.negative_prompt, params)
            infotexts.append(text)
            if req.save:
                paths.append(str(save_png(image, text, self.outputs_dir(), seed)))
        return GenerationResult(images=images, seeds=seeds, infotexts=infotexts, paths=paths,
                                model=loaded.entry.title, elapsed_s=time.perf_counter() - start, notes=notes)

    def _sample(self, loaded: LoadedModel, job: PreparedJob, req: GenerationRequest, report, ctx: JobContext):
        """Run the backend and the post-processors; out-of-memory frees memory and becomes OutOfMemory."""
        oom = None
        try:
            encode = partial(self.encode_cached, loaded, text_encoder_state(report.text_encoder_state))
            run = getattr(loaded.backend, job.capability.value)  # txt2img | img2img | inpaint
            if req.enable_hr and job.capability is Capability.TXT2IMG:  # txt2img, upscale, img2img
                run = partial(run_hires, loaded.backend)
            detector = self._face_detector(req)  # before sampling: missing weights refuse at once
            out = run(req, ctx, encode=encode, tae=loaded.backend.decoder_for(req))
            images, detailer_notes = self._detail(loaded, req, out, ctx, encode, detector)
            post = run_postprocessors(  # extensions' post-processors, still on the device lock
                images, out.seeds, req, list(job.postprocessors), report=ctx.report,
                check_cancelled=ctx.check_cancelled, options_for=self.options_for, device=str(self.device))
            post.notes[:0] = detailer_notes
            return post.images, out.seeds, post
        except (MemoryError, torch.OutOfMemoryError) as exc:
            oom = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        # out of the except block: the failed call's tensors are unreferenced now
        release_memory(self.device)
        raise OutOfMemory(f"out of memory while generating ({oom}); the memory was released, "
                          "try a smaller size or batch")

    def _face_detector(self, req: GenerationRequest):
        """The detailer's MTCNN (None when the detailer is off); MissingComponent without its weights."""
        if req.detailer is None or not req.detailer.enabled:
            return None
        from modules.faces.detailer import load_detector
        folders = getattr(self.outputs_dir, "__self__", None)  # the engine's Folders (outputs_dir is bound)
        models_dir = self.models_dir() if self.models_dir else getattr(folders, "models", Path("models"))
        return load_detector(models_dir, "cpu")

    def _detail(self, loaded: LoadedModel, req: GenerationRequest, out, ctx: JobContext, encode, detector):
        """The face detailer (``req.detailer``): each face inpainted again through the same backend."""
        if detector is None:
            return out.images, []
        from modules.faces.detailer import run_detailer
        inpaint = partial(loaded.backend.inpaint, ctx=ctx, encode=encode, tae=None)
        images, notes, _faces = run_detailer(out.images, out.seeds, req, detect=detector.detect,
                                             inpaint=inpaint, report=ctx.report,
                                             check_cancelled=ctx.check_cancelled)
        return images, notes

    def encode_cached(self, loaded: LoadedModel, te_state: str, prompt: str, negative: str, do_cfg: bool,
                      clip_skip: int):
        """The encode step through the cache. Runs on the worker with the device lock held; ``te_state``
        names the LoRAs active on the text encoder(s) right now."""
        key = embedding_key(loaded, te_state, prompt, negative, do_cfg, clip_skip)
        return self.embed_cache.get_or_compute(
            key, partial(loaded.backend.encode, prompt, negative, do_cfg, clip_skip), device=self.device)


def infotext_params(req: GenerationRequest, entry: ModelEntry, seed: int) -> dict:
    """A1111's infotext keys for one image (``Version`` last)."""
    params = {
        "Steps": req.steps, "Sampler": req.sampler, "CFG scale": req.cfg_scale, "Seed": seed,
        "Size": f"{req.width}x{req.height}", "Model hash": entry.hash, "Model": entry.name,
    }
    if req.clip_skip > 1:
        params["Clip skip"] = req.clip_skip
    if req.preset:
        params["Preset"] = req.preset
    if req.styles:
        params["Styles"] = ", ".join(req.styles)
    if req.decoder == "taesd":
        params["Decoder"] = "TAESD"
    params.update(image_params(req))
    params.update(hires_params(req))
    if req.detailer is not None and req.detailer.enabled:
        params.update(req.detailer.infotext(f"Visage {__version__}"))
    params.update(req.extra_infotext)
    params["Version"] = f"Visage {__version__}"
    return {k: v for k, v in params.items() if v is not None and v != ""}


def image_params(req: GenerationRequest) -> dict:
    """A1111's img2img / inpainting infotext keys (none for txt2img)."""
    if req.init_image is None:
        return {}
    params = {"Denoising strength": req.denoising_strength}
    if req.resize_mode:
        params["Resize mode"] = ("Just resize", "Crop and resize", "Resize and fill")[req.resize_mode]
    if req.mask is not None:
        params["Mask blur"] = req.mask_blur
        if req.inpainting_mask_invert:
            params["Mask mode"] = "Inpaint not masked"
        params["Masked content"] = ("fill", "original", "latent noise", "latent nothing")[req.inpainting_fill]
        if req.inpaint_full_res:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = req.inpaint_full_res_padding
    return params
