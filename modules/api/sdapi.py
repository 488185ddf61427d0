"""A1111-compatible API under ``/sdapi/v1``: existing clients (e.g. ``webuiapi``) work unchanged. Torch-free.

Requests use A1111's field names and shapes; fields Visage has no use for are accepted and ignored
(listed in docs/api.md, and those that would change the picture are named in ``info``).
"""
import io
import json
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from modules import __version__
from modules.api.adetailer import detailer_from_scripts, uses_only_adetailer
from modules.api.errors import ERROR_RESPONSES, ApiError
from modules.api.images import decode_upload, encode_png, text_items
from modules.api.models import (
    A1111_IGNORED, A1111_IGNORED_EFFECTIVE, PngInfoRequest, PngInfoResponse, ProgressResponse, ProgressState,
    PromptStyle, RequestModels, Sampler, Scheduler, ScriptsList, SdLora, SdModel, Txt2ImgResponse,
)
from modules.api.runtime import ApiRuntime
from modules.errors import InvalidRequest
from modules.families import FAMILIES, FLOW_SAMPLERS, SD_SAMPLERS, Family, family_info
from modules.generation.params import GenerationRequest, GenerationResult
from modules.messages import Message
from modules.names import check_name
from modules.outputs.infotext import parse_infotext, parse_size
from modules.outputs.saving import MAX_READ_PIXELS, read_png_parameters
from modules.registry.entry import ModelFormat

PREFIX = "/sdapi/v1"
#: infotext keys that have their own place in A1111's ``info``; the rest go to extra_generation_params
_INFO_KEYS = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Clip skip", "Version",
              "Styles"}


def a1111_sampler(name: str | None, scheduler: str | None, family: Family) -> str | None:
    """Visage's sampler for A1111's ``sampler_name`` + ``scheduler`` (None: the family default).

    ``DPM++ 2M`` with scheduler ``Karras`` is ``DPM++ 2M Karras``; on a flow-matching family (Z-Image)
    any of the U-Net samplers means the flow-match Euler sampler. Unknown names are passed on, and
    the engine answers 422 listing the valid ones.
    """
    if not name or not name.strip():
        return None
    name = name.strip()
    info = family_info(family)
    by_lower = {s.lower(): s for s in info.samplers}
    if scheduler and scheduler.strip().lower() == "karras" and not name.lower().endswith(" karras"):
        karras = by_lower.get(f"{name} karras".lower())
        if karras:
            return karras
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    if info.samplers == FLOW_SAMPLERS and (name in SD_SAMPLERS or name.lower().startswith("euler")):
        return info.default_sampler
    return name


def _number(text: str | None, kind=float):
    try:
        return kind(text) if text not in (None, "") else None
    except ValueError:
        return None


def a1111_info(result: GenerationResult, body, styles: list[str], ignored: list[str]) -> dict[str, Any]:
    """A1111's ``info`` for a finished txt2img (values read back from the images' infotexts)."""
    first = result.infotexts[0] if result.infotexts else ""
    prompt, negative, params = parse_infotext(first)
    width, height = parse_size(params.get("Size", "")) or (body.width, body.height)
    n = len(result.seeds)
    extra = {k: v for k, v in params.items() if k not in _INFO_KEYS}
    prompts = [parse_infotext(t)[0] for t in result.infotexts] or [prompt]
    negatives = [parse_infotext(t)[1] for t in result.infotexts] or [negative]
    info = {
        "prompt": prompt, "all_prompts": prompts, "negative_prompt": negative, "all_negative_prompts": negatives,
        "seed": result.seeds[0] if result.seeds else body.seed, "all_seeds": list(result.seeds),
        "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0,
        "width": width, "height": height, "sampler_name": params.get("Sampler"),
        "cfg_scale": _number(params.get("CFG scale")), "steps": _number(params.get("Steps"), int),
        "batch_size": body.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": params.get("Model"), "sd_model_hash": params.get("Model hash"),
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": _hires_denoise(body), "extra_generation_params": extra, "index_of_first_image": 0,
        "infotexts": list(result.infotexts), "styles": styles,
        "job_timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": _number(params.get("Clip skip"), int) or 1, "is_using_inpainting_conditioning": False,
        "version": params.get("Version", f"Visage {__version__}"),
    }
    if ignored:
        info["visage_ignored"] = ignored
    if result.notes:
        info["visage_notes"] = list(result.notes)
    return info


def parameters_dict(text: str) -> dict[str, Any]:
    """A1111's parsed ``parameters`` for PNG Info: Prompt, Negative prompt, each key, and Size-1/Size-2."""
    if not text:
        return {}
    prompt, negative, params = parse_infotext(text)
    out: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative, **params}
    size = parse_size(params.get("Size", ""))
    if size:
        out["Size-1"], out["Size-2"] = size
    return out


def _ignored_in_use(body) -> list[str]:
    """The ignored fields a client set to something that would matter in A1111."""
    used = []
    for key in A1111_IGNORED_EFFECTIVE:
        value = getattr(body, key, None)
        if value in (None, False, "", 0, -1, 0.0) or value == {} or value == []:
            continue
        used.append(key)
    return used


def sdapi_router(rt: ApiRuntime, models: RequestModels, dependencies: list) -> APIRouter:
    router = APIRouter(prefix=PREFIX, dependencies=dependencies, responses=ERROR_RESPONSES, tags=["sdapi"])
    _generation_routes(router, rt, models.txt2img)
    if models.img2img is not None:
        _img2img_routes(router, rt, models.img2img)
    _model_routes(router, rt)
    _progress_routes(router, rt)
    _list_routes(router, rt)
    return router


def _generation_routes(router: APIRouter, rt: ApiRuntime, Txt2ImgRequest) -> None:  # noqa: N803 - a model class
    @router.post("/txt2img", response_model=Txt2ImgResponse, summary="A1111 txt2img")
    async def txt2img(body: Txt2ImgRequest) -> Txt2ImgResponse:  # type: ignore[valid-type]
        req = await run_in_threadpool(a1111_txt2img_request, rt, body)
        return await _a1111_response(rt, body, req)


def _img2img_routes(router: APIRouter, rt: ApiRuntime, Img2ImgRequest) -> None:  # noqa: N803 - a model class
    @router.post("/img2img", response_model=Txt2ImgResponse, summary="A1111 img2img (with a mask: inpainting)")
    async def img2img(body: Img2ImgRequest) -> Txt2ImgResponse:  # type: ignore[valid-type]
        def build() -> GenerationRequest:
            req = a1111_request(rt, body)
            return image_request(rt, req, body, body.init_images[0], "init_images.0")

        req = await run_in_threadpool(build)
        return await _a1111_response(rt, body, req, exclude={"init_images", "mask"})


def image_request(rt: ApiRuntime, req: GenerationRequest, body, image: str, field: str) -> GenerationRequest:
    """``req`` with the upload(s) decoded (bomb-safe) and the img2img / inpainting fields of ``body``."""
    return replace(
        req, init_image=open_upload(image, rt.limits.max_upload_bytes, field),
        mask=open_upload(body.mask, rt.limits.max_upload_bytes, "mask") if body.mask else None,
        denoising_strength=body.denoising_strength, resize_mode=body.resize_mode, mask_blur=body.mask_blur,
        inpainting_fill=body.inpainting_fill, inpaint_full_res=bool(body.inpaint_full_res),
        inpaint_full_res_padding=body.inpaint_full_res_padding,
        inpainting_mask_invert=bool(body.inpainting_mask_invert))


def open_upload(data: str, max_bytes: int, field: str):
    """A base64 upload as a loaded PIL image; over-size, over-pixel (decompression bomb) and non-images are
    InvalidRequest(field) before any pixel is decoded."""
    raw = decode_upload(data, max_bytes, field)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > MAX_READ_PIXELS:
                raise InvalidRequest(field, Message("rule.megapixels", size=f"{width}x{height}",
                                                    n=MAX_READ_PIXELS // 1_000_000))
            image.load()
            return image.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        raise InvalidRequest(field, Message("rule.image")) from None


def a1111_txt2img_request(rt: ApiRuntime, body) -> GenerationRequest:
    """An A1111 txt2img body -> GenerationRequest, the hires fix included."""
    return hires_request(a1111_request(rt, body), body, "denoising_strength")


def hires_request(req: GenerationRequest, body, denoise_field: str) -> GenerationRequest:
    """``req`` with the hires fix fields of ``body`` (A1111's txt2img, or the native generate request, whose
    second-pass denoise is ``hr_denoising_strength``); A1111's API default denoise is 0.75."""
    if not getattr(body, "enable_hr", False):
        return req
    return replace(req, enable_hr=True, hr_scale=float(body.hr_scale), hr_upscaler=body.hr_upscaler or "Latent",
                   hr_second_pass_steps=int(body.hr_second_pass_steps),
                   hr_denoising_strength=_hires_denoise(body, denoise_field),
                   hr_resize_x=int(body.hr_resize_x), hr_resize_y=int(body.hr_resize_y))


def _hires_denoise(body, field: str = "denoising_strength") -> float | None:
    """The hires fix's second-pass denoise a txt2img body asks for (None: no hires fix)."""
    if not getattr(body, "enable_hr", False) or hasattr(body, "init_images"):
        return None
    value = getattr(body, field, None)
    return 0.75 if value is None else float(value)


def a1111_request(rt: ApiRuntime, body) -> GenerationRequest:
    """An A1111 txt2img (or img2img) body -> GenerationRequest, without the images."""
    engine = rt.engine
    overrides = body.override_settings or {}
    model = overrides.get("sd_model_checkpoint")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("override_settings.sd_model_checkpoint", Message("rule.model_name"))
    clip_skip = overrides.get("CLIP_stop_at_last_layers", rt.options.get("CLIP_stop_at_last_layers"))
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12:
        raise InvalidRequest("override_settings.CLIP_stop_at_last_layers",
                             Message("rule.whole_from", low=1, high=12))
    entry = engine.model(model, "override_settings.sd_model_checkpoint") if model else engine.selected
    family = entry.family if entry is not None else engine.family_of(None)
    sampler = a1111_sampler(body.sampler_name or body.sampler_index, body.scheduler, family)
    restorer = _face_restorer(rt)
    save = bool(body.save_images) and not body.do_not_save_samples and rt.options.get("samples_save")
    every = rt.options.get("show_progress_every_n_steps") if rt.options.get("live_previews_enable") else 0
    return GenerationRequest(
        prompt=body.prompt, negative_prompt=body.negative_prompt, steps=body.steps, cfg_scale=body.cfg_scale,
        seed=body.seed, width=body.width, height=body.height, sampler=sampler, batch_size=body.batch_size,
        batch_count=body.n_iter, clip_skip=clip_skip, model=model, styles=list(body.styles or []), save=save,
        preview_every=max(0, every),  # Engine.prepare turns previews off where TAESD is missing
        postprocess=[restorer.id] if body.restore_faces and restorer else [],
        detailer=detailer_from_scripts(body.alwayson_scripts, resolution=family_info(family).width,
                                       img2img=hasattr(body, "init_images")))


def _face_restorer(rt: ApiRuntime):
    """The extension post-processor ``restore_faces: true`` selects (None: none installed)."""
    return rt.extensions.face_restorer() if rt.extensions is not None else None


async def _a1111_response(rt: ApiRuntime, body, req: GenerationRequest, exclude=None) -> Txt2ImgResponse:
    try:
        result = await rt.generate(req)
    except ApiError as exc:
        if exc.code != "interrupted":
            raise
        result = GenerationResult(images=[], seeds=[], infotexts=[], paths=[], model="", notes=["interrupted"])
    images = ([encode_png(img, text) for img, text in zip(result.images, result.infotexts)]
              if body.send_images else [])
    restorer = _face_restorer(rt) if body.restore_faces else None
    ignored = [k for k in _ignored_in_use(body) if not (k == "restore_faces" and restorer)
               and not (k == "alwayson_scripts" and uses_only_adetailer(body.alwayson_scripts))]
    info = a1111_info(result, body, list(body.styles or []), ignored)
    if req.init_image is not None:
        info["denoising_strength"] = req.denoising_strength
        info["is_using_inpainting_conditioning"] = req.mask is not None
    if restorer is not None and result.infotexts:
        info["restore_faces"] = True
        info["face_restoration_model"] = info["extra_generation_params"].get("Face restoration") or restorer.id
    return Txt2ImgResponse(images=images, parameters=body.model_dump(mode="json", exclude=exclude),
                           info=json.dumps(info))


def _model_routes(router: APIRouter, rt: ApiRuntime) -> None:
    """Checkpoints and options (``sd_model_checkpoint`` switches the model)."""
    engine = rt.engine

    @router.get("/sd-models", response_model=list[SdModel], summary="Checkpoints Visage can load")
    async def sd_models() -> list[SdModel]:
        entries = await run_in_threadpool(engine.models)
        out = []
        for e in entries:
            if not e.supported or e.format is ModelFormat.EDGE:
                continue
            sha = engine.model_sha256(e)
            out.append(SdModel(title=e.title, model_name=e.name.replace("/", "_"), hash=e.hash, sha256=sha,
                               filename=str(e.path), config=None))
        return out

    @router.post("/refresh-checkpoints", response_model=None, summary="Rescan the model folders")
    async def refresh_checkpoints() -> None:
        await run_in_threadpool(engine.models, True)

    @router.get("/options", response_model=dict[str, Any], summary="Options (A1111 keys Visage uses)")
    def get_options() -> dict[str, Any]:
        selected = engine.selected  # what requests without a model run on (a per-request override does not change it)
        sha = engine.model_sha256(selected) if selected is not None else None
        return {"sd_model_checkpoint": selected.title if selected else None, "sd_checkpoint_hash": sha,
                **rt.options.values(), "sd_checkpoint_cache": rt.settings.ckpt_cache, "samples_format": "png"}

    @router.post("/options", response_model=None,
                 summary="Set options; sd_model_checkpoint switches the model and waits for it")
    async def set_options(body: dict[str, Any] = Body(...)) -> None:
        checkpoint = body.get("sd_model_checkpoint")
        if checkpoint is not None:
            if not isinstance(checkpoint, str):
                raise InvalidRequest("sd_model_checkpoint", Message("rule.model_name"))
            check_name("sd_model_checkpoint", checkpoint)
        rest = {k: v for k, v in body.items() if k != "sd_model_checkpoint"}
        known = {k: v for k, v in rest.items() if k in rt.options.values()}
        if known:
            await run_in_threadpool(rt.options.update, known)  # validates all before switching anything
        if checkpoint is not None:
            await rt.switch(checkpoint, "sd_model_checkpoint")


def _progress_routes(router: APIRouter, rt: ApiRuntime) -> None:
    engine = rt.engine

    @router.get("/progress", response_model=ProgressResponse, summary="The running job's progress")
    def progress(skip_current_image: bool = False) -> ProgressResponse:
        job = engine.current_job()
        count = engine.queue_length()
        if job is None:
            return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState(job_count=count))
        p = job.progress
        fraction = min(1.0, p.fraction)
        elapsed = max(0.0, time.monotonic() - job.created)
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        image = None
        if not skip_current_image and p.preview is not None and hasattr(p.preview, "save"):
            image = encode_png(p.preview)
        state = ProgressState(interrupted=job.cancel_event.is_set(), job=f"{job.kind} {job.id}", job_count=count,
                              sampling_step=p.step, sampling_steps=p.total)
        return ProgressResponse(progress=round(fraction, 4), eta_relative=round(eta, 3), state=state,
                                current_image=image, textinfo=p.phase)

    @router.post("/interrupt", response_model=None, summary="Stop the running job (page or API)")
    def interrupt() -> None:
        engine.interrupt()


def _list_routes(router: APIRouter, rt: ApiRuntime) -> None:
    """PNG Info and the lists A1111 clients read (samplers, LoRAs, styles, face restorers, scripts)."""
    engine = rt.engine

    @router.post("/png-info", response_model=PngInfoResponse, summary="Read the infotext of an image")
    async def png_info(body: PngInfoRequest) -> PngInfoResponse:
        def read():
            raw = decode_upload(body.image, rt.limits.max_upload_bytes)
            text = read_png_parameters(raw) or ""
            return PngInfoResponse(info=text, items=text_items(raw), parameters=parameters_dict(text))

        return await run_in_threadpool(read)

    @router.get("/samplers", response_model=list[Sampler])
    def samplers() -> list[Sampler]:
        names: list[str] = []
        for info in FAMILIES.values():
            names += [s for s in info.samplers if s not in names]
        return [Sampler(name=n, aliases=[], options={"family": [f.value for f, i in FAMILIES.items()
                                                                 if n in i.samplers]})
                for n in names]

    @router.get("/schedulers", response_model=list[Scheduler])
    def schedulers() -> list[Scheduler]:
        return [Scheduler(name="automatic", label="Automatic"), Scheduler(name="karras", label="Karras")]

    @router.get("/loras", response_model=list[SdLora])
    async def loras() -> list[SdLora]:
        infos = await run_in_threadpool(engine.loras)
        return [SdLora(name=i.name, alias=i.alias or i.name, path=str(i.path),
                       metadata={"family": i.family.value if i.family else None, "format": i.format})
                for i in infos if i.supported]

    @router.post("/refresh-loras", response_model=None)
    async def refresh_loras() -> None:
        await run_in_threadpool(engine.loras, True)

    @router.get("/prompt-styles", response_model=list[PromptStyle])
    def prompt_styles() -> list[PromptStyle]:
        return [PromptStyle(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
                for s in engine.styles().values()]

    @router.get("/face-restorers", response_model=list[dict[str, Any]],
                summary="Face restorers (extension post-processors of kind face_restore)")
    def face_restorers() -> list[dict[str, Any]]:
        pps = rt.extensions.postprocessors if rt.extensions is not None else []
        return [{"name": p.id, "cmd_dir": None} for p in pps if p.kind == "face_restore"]

    @router.get("/scripts", response_model=ScriptsList, summary="No scripts (A1111 clients probe this)")
    def scripts() -> ScriptsList:
        return ScriptsList()


__all__ = ["A1111_IGNORED", "a1111_info", "a1111_sampler", "parameters_dict", "sdapi_router"]
