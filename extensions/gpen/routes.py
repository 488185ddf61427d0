"""``POST /api/v1/restore-faces``: base64 image in, base64 PNG out plus the faces found. Torch-free.

The restoration runs as a job on the engine's queue (one at a time with generations). A missing weights
file is answered at once with 404 ``missing_component`` naming the file and where to put it.
"""
import io
from typing import Optional

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from modules.api.errors import ERROR_RESPONSES, ApiError
from modules.api.images import decode_upload, encode_png
from modules.errors import InvalidRequest, MissingComponent

from .restore import FaceRestorer, RestoreOptions
from .strings import msg
from .variants import VARIANTS

#: decoded upload limit (the same as the A1111 png-info upload)
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 50_000_000
PATH = "/api/v1/restore-faces"


class RestoreFacesRequest(BaseModel):
    image: str = Field(description="base64 image (PNG/JPEG/WebP; a data: URL prefix is fine)")
    model: Optional[str] = Field(None, description=f"one of {', '.join(VARIANTS)} (default from settings)")
    max_side: Optional[int] = Field(None, ge=0, le=16384, description="detect on a copy with this long side; 0 = full size")
    tile: Optional[int] = Field(None, ge=0, le=16384, description="detect in overlapping tiles of this size; 0 = off")
    fp16: Optional[bool] = Field(None, description="half precision on a CUDA device (ignored on CPU)")
    upscale: Optional[int] = Field(None, ge=1, le=4, description="resize the whole image by this factor first")
    strength: Optional[float] = Field(None, ge=0.0, le=1.0, description="blend weight of the restored faces")
    detector: Optional[str] = Field(None, description="auto (default: mtcnn when its weights are in models/face-detection/mtcnn, else haar), haar (built in), mtcnn, or retinaface (user-supplied weights)")
    color_match: Optional[bool] = None


class FaceBox(BaseModel):
    box: list[float]
    score: float
    landmarks: Optional[list[list[float]]] = None
    eyes: Optional[list[list[float]]] = None


class RestoreFacesResponse(BaseModel):
    image: str = Field(description="base64 PNG of the restored photo")
    faces_found: int
    faces: list[FaceBox]
    model: str
    device: str
    dtype: str
    seconds: float
    seconds_per_face: float
    notes: list[str] = []


def build_router(restorer: FaceRestorer, defaults: RestoreOptions, submit) -> APIRouter:
    router = APIRouter(tags=["extension: gpen"], responses=ERROR_RESPONSES)

    @router.post(PATH, response_model=RestoreFacesResponse, summary="Restore the faces in a photo (GPEN)")
    async def restore_faces(body: RestoreFacesRequest) -> RestoreFacesResponse:
        values = body.model_dump(exclude={"image"}, exclude_none=True)
        options = RestoreOptions.from_mapping(values, defaults)
        try:
            restorer.check_ready(options)
        except MissingComponent as exc:
            raise ApiError(404, exc.code, str(exc)) from None
        image = open_image(decode_upload(body.image, MAX_UPLOAD_BYTES))
        job = submit("restore-faces", lambda ctx: restorer.restore(
            image, options, report=ctx.report, cancelled=lambda: ctx.cancelled))
        result = await run_in_threadpool(job.wait)
        return RestoreFacesResponse(
            image=encode_png(result.image), faces_found=len(result.faces), faces=result.faces,
            model=result.model, device=result.device, dtype=result.dtype, seconds=round(result.seconds, 3),
            seconds_per_face=round(result.seconds_per_face, 3), notes=result.notes)

    return router


def open_image(raw: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_PIXELS:
            raise InvalidRequest("image", msg("gpen.rule.image_over", width=image.width, height=image.height,
                                                  mp=MAX_PIXELS // 1_000_000))
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise InvalidRequest("image", msg("gpen.rule.unreadable")) from None
    return image.convert("RGB")
