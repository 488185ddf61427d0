"""Visage's own API: ``/api/v1/...`` (``/healthz`` is :mod:`modules.api.health`). Torch-free."""
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from modules import __version__
from modules.api.adetailer import DETAILER_RESOLUTION, native_detailer
from modules.api.errors import ERROR_RESPONSES, ApiError
from modules.api.images import encode_png
from modules.api.models import (
    CacheStatsResponse, ExtensionItem, GenerateResponse, Health, Interrupted, LoraItem, ModelInfo, PresetItem,
    RequestModels, SwitchRequest, SwitchResponse,
)
from modules.api.names import output_file
from modules.api.runtime import ApiRuntime
from modules.api.sdapi import hires_request, image_request
from modules.generation.params import GenerationRequest


def _relative_files(paths: list[str], outputs: Path) -> list[str]:
    root = outputs.resolve()
    out = []
    for p in paths:
        try:
            out.append(Path(p).resolve().relative_to(root).as_posix())
        except ValueError:
            out.append(Path(p).name)
    return out


def native_router(rt: ApiRuntime, models: RequestModels, dependencies: list) -> APIRouter:
    router = APIRouter(dependencies=dependencies, responses=ERROR_RESPONSES)
    _job_routes(router, rt, models.generate)
    if models.native_img2img is not None:
        _img2img_routes(router, rt, models.native_img2img)
    _model_routes(router, rt)
    _list_routes(router, rt)
    return router


def _job_routes(router: APIRouter, rt: ApiRuntime, GenerateRequest) -> None:  # noqa: N803 - a model class
    """Generation."""
    @router.post("/api/v1/generate", response_model=GenerateResponse, tags=["native"],
                 summary="Generate images (queued with the page's jobs)")
    async def generate(body: GenerateRequest) -> GenerateResponse:  # type: ignore[valid-type]
        return await _native_response(rt, hires_request(native_request(body), body, "hr_denoising_strength"))


def _img2img_routes(router: APIRouter, rt: ApiRuntime, Img2ImgRequest) -> None:  # noqa: N803 - a model class
    @router.post("/api/v1/img2img", response_model=GenerateResponse, tags=["native"],
                 summary="img2img, or inpainting with a mask (queued with the page's jobs)")
    async def img2img(body: Img2ImgRequest) -> GenerateResponse:  # type: ignore[valid-type]
        req = await run_in_threadpool(lambda: image_request(rt, native_request(body), body, body.init_image,
                                                            "init_image"))
        return await _native_response(rt, req)


def native_request(body) -> GenerationRequest:
    return GenerationRequest(
        prompt=body.prompt, negative_prompt=body.negative_prompt, steps=body.steps, cfg_scale=body.cfg_scale,
        seed=body.seed, width=body.width, height=body.height, sampler=body.sampler,
        batch_size=body.batch_size, batch_count=body.batch_count, clip_skip=body.clip_skip, model=body.model,
        preset=body.preset, styles=list(body.styles), loras=[(lw.name, lw.weight) for lw in body.loras],
        save=body.save, preview_every=body.preview_every, decoder=body.decoder, backend=body.backend,
        postprocess=list(body.postprocess), detailer=native_detailer(body.detailer, DETAILER_RESOLUTION))


async def _native_response(rt: ApiRuntime, req: GenerationRequest) -> GenerateResponse:
    result = await rt.generate(req)
    images = [encode_png(img, text) for img, text in zip(result.images, result.infotexts)]
    return GenerateResponse(images=images, infotexts=result.infotexts, seeds=result.seeds,
                            files=_relative_files(result.paths, rt.settings.outputs_dir), model=result.model,
                            elapsed_s=round(result.elapsed_s, 4), notes=result.notes)


def _model_routes(router: APIRouter, rt: ApiRuntime) -> None:
    engine = rt.engine

    @router.get("/api/v1/models", response_model=list[ModelInfo], tags=["native"])
    async def list_models(refresh: bool = False) -> list[ModelInfo]:
        entries = await run_in_threadpool(engine.models, refresh)
        current = engine.status().model
        return [ModelInfo(name=e.name, title=e.title, family=e.family.value if e.family else None, format=e.format,
                          supported=e.supported, reason=e.reason, hash=e.hash, size_bytes=e.size_bytes,
                          source=e.source, current=current in (e.title, e.name)) for e in entries]

    @router.post("/api/v1/models/switch", response_model=SwitchResponse, tags=["native"],
                 summary="Load a model and wait until it is ready")
    async def switch_model(body: SwitchRequest) -> SwitchResponse:
        entry = await rt.switch(body.model, "model")
        return SwitchResponse(model=entry.title, family=entry.family.value if entry.family else None,
                              state=engine.status().state)


def _list_routes(router: APIRouter, rt: ApiRuntime) -> None:
    """LoRAs, presets, extensions, cache statistics, interrupt and saved outputs."""
    engine = rt.engine

    @router.get("/api/v1/loras", response_model=list[LoraItem], tags=["native"])
    async def list_loras(refresh: bool = False) -> list[LoraItem]:
        infos = await run_in_threadpool(engine.loras, refresh)
        return [LoraItem(name=i.name, rel_name=i.rel_name, alias=i.alias, family=i.family.value if i.family else None,
                         format=i.format, supported=i.supported, reason=i.reason, rank=i.rank, hash=i.hash)
                for i in infos]

    @router.get("/api/v1/presets", response_model=list[PresetItem], tags=["native"])
    def list_presets() -> list[PresetItem]:
        return [PresetItem(**{k: v for k, v in p.to_dict().items() if k in PresetItem.model_fields})
                for p in engine.presets()]

    @router.get("/api/v1/extensions", response_model=list[ExtensionItem], tags=["native"],
                summary="Extensions: loaded, failed (with the error) or disabled, and what each provides")
    def list_extensions() -> list[ExtensionItem]:
        return [ExtensionItem(**item) for item in (rt.extensions.summary() if rt.extensions else [])]

    @router.get("/api/v1/cache/stats", response_model=CacheStatsResponse, tags=["native"],
                summary="Prompt-embedding cache counters")
    def cache_stats() -> CacheStatsResponse:
        s = engine.cache_stats()
        return CacheStatsResponse(hits=s.hits, misses=s.misses, hit_rate=round(s.hit_rate, 4), entries=s.entries,
                                  bytes=s.bytes, max_bytes=s.max_bytes, time_saved_s=round(s.time_saved_s, 4),
                                  disk_entries=s.disk_entries, disk_bytes=s.disk_bytes, disk_hits=s.disk_hits)

    @router.post("/api/v1/interrupt", response_model=Interrupted, tags=["native"],
                 summary="Stop the running job (page or API) at its next step")
    def interrupt() -> Interrupted:
        return Interrupted(interrupted=engine.interrupt())

    @router.get("/api/v1/outputs/{name:path}", tags=["native"], summary="A saved image, by its 'files' name",
                response_class=FileResponse,
                responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
    def get_output(name: str):
        path = output_file(rt.settings.outputs_dir, name)
        if not path.is_file():
            raise ApiError(404, "not_found", f"no saved image named {name!r}")
        return FileResponse(path)
