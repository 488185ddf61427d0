"""Request and response schemas (pydantic) of both APIs. Torch-free.

Request bounds come from :class:`ApiLimits` so that the published OpenAPI schema says what the
server accepts; the engine's own ``check_inputs`` still runs (family rules such as Z-Image's
multiples of 16). Names are checked here too: a name that looks like a path out is a 422.
"""
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from modules.api.adetailer import DetailerRequest
from modules.generation.params import (
    BACKENDS, DECODERS, MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS,
)
from modules.names import name_problem
from modules.outputs.saving import MAX_READ_BYTES


@dataclass(frozen=True)
class ApiLimits:
    """What one request may ask for. The defaults are the engine's own limits; a server (or a test)
    may narrow them, e.g. to keep generated requests cheap."""

    min_side: int = 64
    max_side: int = 2048
    max_steps: int = MAX_STEPS
    max_batch_size: int = MAX_BATCH_SIZE
    max_batch_count: int = MAX_BATCH_COUNT
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_list: int = 16  # styles, LoRAs
    max_body_bytes: int = 1 << 20  # JSON requests other than uploads
    max_upload_bytes: int = MAX_READ_BYTES  # decoded image for /sdapi/v1/png-info

    @property
    def max_upload_body_bytes(self) -> int:
        """Body size of an upload: base64 (4/3) plus room for the JSON around it."""
        return self.max_upload_bytes * 4 // 3 + (64 << 10)


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_text)]
Name = Annotated[str, Field(max_length=1024), AfterValidator(_name)]


# ------------------------------------------------------------------------------------------ responses

class Health(BaseModel):
    state: str = Field(description="idle | loading | ready | error")
    ready: bool
    model: str | None
    family: str | None
    message: str
    queue_length: int
    max_queue: int
    device: str
    dtype: str
    version: str


class GenerateResponse(BaseModel):
    images: list[str] = Field(description="base64 PNGs, each with its infotext in a 'parameters' chunk")
    infotexts: list[str]
    seeds: list[int]
    files: list[str] = Field(description="saved files, relative to the outputs folder (GET /api/v1/outputs/...)")
    model: str
    elapsed_s: float
    notes: list[str]


class ModelInfo(BaseModel):
    name: str
    title: str
    family: str | None
    format: str
    supported: bool
    reason: str
    hash: str | None
    size_bytes: int
    source: str
    current: bool


class LoraItem(BaseModel):
    name: str
    rel_name: str
    alias: str | None
    family: str | None
    format: str
    supported: bool
    reason: str
    rank: int | None
    hash: str | None


class PresetItem(BaseModel):
    id: str
    name: dict[str, str]
    description: dict[str, str]
    families: list[str]
    prompt: str
    negative_prompt: str
    family_params: dict[str, dict[str, Any]]
    loras: list[dict[str, Any]] = []
    tags: list[str] = []


class CacheStatsResponse(BaseModel):
    hits: int
    misses: int
    hit_rate: float
    entries: int
    bytes: int
    max_bytes: int
    time_saved_s: float
    disk_entries: int
    disk_bytes: int
    disk_hits: int


class ExtensionItem(BaseModel):
    name: str
    state: str = Field(description="loaded | failed | disabled")
    error: str | None = Field(None, description="why it failed")
    disabled_by: str | None = Field(None, description="settings | flag | all")
    version: str | None
    description: str
    provides: list[str]
    folder: str
    postprocessors: list[str]
    tabs: list[str]
    routes: list[str]
    cli_commands: list[str]
    warnings: list[str]


class SwitchRequest(BaseModel):
    model: Name


class SwitchResponse(BaseModel):
    model: str
    family: str | None
    state: str


class Interrupted(BaseModel):
    interrupted: bool = Field(description="whether a job was running")


# A1111 shapes ---------------------------------------------------------------------------------------

class Txt2ImgResponse(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str = Field(description="JSON text with A1111's keys (prompt, all_seeds, infotexts, ...)")


class SdModel(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class SdLora(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class PromptStyle(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = Field(None, description="base64 PNG of the live preview, when there is one")
    textinfo: str | None = None


class PngInfoRequest(BaseModel):
    image: str = Field(description="base64 image (a data: URL prefix is accepted)")


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: list[str] = []
    img2img: list[str] = []


#: A1111 txt2img fields Visage accepts and ignores (see docs/api.md), with their types
A1111_IGNORED: dict[str, Any] = {
    "subseed": (int, -1), "subseed_strength": (float, 0.0), "seed_resize_from_h": (int, -1),
    "seed_resize_from_w": (int, -1), "restore_faces": (bool | None, None), "tiling": (bool | None, None),
    "do_not_save_grid": (bool, False), "eta": (float | None, None),
    "s_min_uncond": (float | None, None), "s_churn": (float | None, None), "s_tmax": (float | None, None),
    "s_tmin": (float | None, None), "s_noise": (float | None, None),
    "override_settings_restore_afterwards": (bool, True), "refiner_checkpoint": (str | None, None),
    "refiner_switch_at": (float | None, None), "disable_extra_networks": (bool, False),
    "firstpass_image": (str | None, None), "comments": (dict[str, Any] | None, None),
    "firstphase_width": (int, 0), "firstphase_height": (int, 0), "hr_checkpoint_name": (str | None, None),
    "hr_sampler_name": (str | None, None), "hr_scheduler": (str | None, None), "hr_prompt": (str, ""),
    "hr_negative_prompt": (str, ""), "force_task_id": (str | None, None), "script_name": (str | None, None),
    "script_args": (list[Any], []), "alwayson_scripts": (dict[str, Any], {}), "infotext": (str | None, None),
    "distilled_cfg_scale": (float | None, None),
}
#: of those, the ones that change the picture in A1111 when set: reported back in ``info``
A1111_IGNORED_EFFECTIVE = ("restore_faces", "tiling", "subseed_strength", "seed_resize_from_h",
                           "seed_resize_from_w", "script_name", "alwayson_scripts", "refiner_checkpoint",
                           "firstpass_image")


#: A1111 img2img fields Visage accepts and ignores, with their types
A1111_IMG2IMG_IGNORED: dict[str, Any] = {
    "image_cfg_scale": (float | None, None), "include_init_images": (bool, False),
    "initial_noise_multiplier": (float | None, None), "latent_mask": (str | None, None),
    "inpainting_mask_weight": (float | None, None), "mask_round": (bool, True),
    "mask_blur_x": (int, 4), "mask_blur_y": (int, 4),
}


def hires_fields(limits: ApiLimits) -> dict[str, Any]:
    """A1111's hires fix fields (txt2img); A1111 calls the second pass's denoise ``denoising_strength``."""
    return {
        "enable_hr": (bool, Field(False, description="hires fix: first pass, upscale, second pass img2img")),
        "hr_scale": (float, Field(2.0, ge=1.0, le=4.0, description="second pass size = first pass size x this")),
        "hr_upscaler": (str | None, Field(None, max_length=64, description=(
            "Latent (default), Latent (nearest), Lanczos or Nearest; no model upscalers yet"))),
        "hr_second_pass_steps": (int, Field(0, ge=0, le=limits.max_steps, description="0: the same as steps")),
        "hr_resize_x": (int, Field(0, ge=0, le=limits.max_side, description="0: from hr_scale")),
        "hr_resize_y": (int, Field(0, ge=0, le=limits.max_side, description="0: from hr_scale")),
        "denoising_strength": (float | None, Field(None, ge=0.0, le=1.0, description=(
            "hires fix: the second pass's denoising strength (above 0; default 0.75, as A1111's API)"))),
    }


def image_fields(limits: ApiLimits, *, a1111: bool) -> dict[str, Any]:
    """The img2img / inpainting fields (A1111's API defaults on /sdapi: fill, only masked, padding 0)."""
    Upload = Annotated[str, Field(max_length=limits.max_upload_bytes * 4 // 3 + 64)]
    return {
        "denoising_strength": (float, Field(0.75, ge=0.0, le=1.0)),
        "resize_mode": (int, Field(0, ge=0, le=2, description="0 just resize, 1 crop and resize, 2 resize and fill")),
        "mask": (Upload | None, Field(None, description="base64 image, white = repaint, the init image's size")),
        "mask_blur": (int, Field(4, ge=0, le=64)),
        "inpainting_fill": (int, Field(0 if a1111 else 1, ge=0, le=3,
                                       description="0 fill, 1 original, 2 latent noise, 3 latent nothing")),
        "inpaint_full_res": (bool | int, Field(a1111, description="only masked: the padded crop at full size")),
        "inpaint_full_res_padding": (int, Field(0 if a1111 else 32, ge=0, le=256)),
        "inpainting_mask_invert": (int | bool, Field(0, ge=0, le=1, description="1: repaint the black part")),
    }


class RequestModels:
    """The request schemas for one set of limits (built by :func:`request_models`)."""

    def __init__(self, generate: type[BaseModel], txt2img: type[BaseModel], lora_weight: type[BaseModel],
                 img2img: type[BaseModel] | None = None, native_img2img: type[BaseModel] | None = None):
        self.generate = generate
        self.txt2img = txt2img
        self.lora_weight = lora_weight
        self.img2img = img2img
        self.native_img2img = native_img2img


def request_models(limits: ApiLimits) -> RequestModels:
    """Request schemas whose bounds are ``limits``."""
    Side = Annotated[int, Field(ge=limits.min_side, le=limits.max_side, multiple_of=8)]
    Prompt = Annotated[Text, Field(max_length=limits.max_prompt_chars)]
    Steps = Annotated[int, Field(ge=1, le=limits.max_steps)]
    BatchSize = Annotated[int, Field(ge=1, le=limits.max_batch_size)]
    BatchCount = Annotated[int, Field(ge=1, le=limits.max_batch_count)]

    class LoraWeight(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: Name
        weight: float = Field(1.0, ge=-4.0, le=4.0)

    class GenerateRequest(BaseModel):
        """Visage's own request: every field optional; unset ones come from the preset or the family."""

        model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "2" for 2, no true for 1.0
        prompt: Prompt = ""
        negative_prompt: Prompt = ""
        preset: Name | None = Field(None, description="preset id (GET /api/v1/presets)")
        model: Name | None = Field(None, description="model name, title or hash; default: the current model")
        loras: list[LoraWeight] = Field(default_factory=list, max_length=limits.max_list)
        styles: list[Name] = Field(default_factory=list, max_length=limits.max_list)
        steps: Steps | None = None
        cfg_scale: float | None = Field(None, ge=0.0, le=30.0)
        seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1: random; image i uses seed + i")
        width: Side | None = None
        height: Side | None = None
        sampler: str | None = Field(None, max_length=64, description="GET /sdapi/v1/samplers")
        batch_size: BatchSize = 1
        batch_count: BatchCount = 1
        clip_skip: int = Field(1, ge=1, le=12)
        # hires fix (txt2img): the same fields as /sdapi/v1/txt2img, the denoise named hr_denoising_strength
        enable_hr: bool = Field(False, description="hires fix: first pass, upscale, second pass img2img")
        hr_scale: float = Field(2.0, ge=1.0, le=4.0, description="second pass size = first pass size x this")
        hr_upscaler: str = Field("Latent", max_length=64, description="Latent, Latent (nearest), Lanczos, Nearest")
        hr_second_pass_steps: int = Field(0, ge=0, le=limits.max_steps, description="0: the same as steps")
        hr_denoising_strength: float = Field(0.7, ge=0.0, le=1.0, description="the second pass's; above 0")
        hr_resize_x: int = Field(0, ge=0, le=limits.max_side, description="0: from hr_scale")
        hr_resize_y: int = Field(0, ge=0, le=limits.max_side, description="0: from hr_scale")
        save: bool = Field(True, description="also write the images to the outputs folder")
        preview_every: int = Field(0, ge=0, le=limits.max_steps,
                                   description="live TAESD preview every N steps (GET /sdapi/v1/progress); 0 = off")
        decoder: Literal[DECODERS] = Field("vae", description="final decode: full VAE, or fast TAESD")
        backend: Literal[BACKENDS] = Field("auto", description="auto (edge packages run on ONNX), diffusers, onnx")
        postprocess: list[Annotated[str, Field(max_length=64)]] = Field(
            default_factory=list, max_length=limits.max_list,
            description="extension post-processors to run on each image, by id (GET /api/v1/extensions)")
        detailer: DetailerRequest | None = Field(None, description="face detailer (ADetailer-style); null = off")

    txt2img_fields: dict[str, Any] = {
        "prompt": (Prompt, ""),
        "negative_prompt": (Prompt, ""),
        "styles": (list[Name] | None, Field(None, max_length=limits.max_list)),
        "seed": (int, Field(-1, ge=-1, le=MAX_SEED)),
        "sampler_name": (str | None, Field(None, max_length=64)),
        "sampler_index": (str | None, Field(None, max_length=64, description="deprecated A1111 alias")),
        "scheduler": (str | None, Field(None, max_length=64, description="'Karras' selects the Karras variant")),
        "batch_size": (BatchSize, 1),
        "n_iter": (BatchCount, 1),
        "steps": (Steps, min(50, limits.max_steps)),
        "cfg_scale": (float, Field(min(7.0, 30.0), ge=0.0, le=30.0)),
        "width": (Side, min(512, limits.max_side)),
        "height": (Side, min(512, limits.max_side)),
        "override_settings": (dict[str, Any] | None, Field(
            None, description="sd_model_checkpoint (this request only), CLIP_stop_at_last_layers")),
        "do_not_save_samples": (bool, False),
        "send_images": (bool, True),
        "save_images": (bool, False),
        **A1111_IGNORED,
        **hires_fields(limits),
    }
    Txt2ImgRequest = create_model(
        "StableDiffusionTxt2ImgProcessingAPI", __config__=ConfigDict(extra="ignore", strict=True), **txt2img_fields)
    Txt2ImgRequest.__doc__ = "A1111's txt2img request; fields Visage does not use are accepted and ignored."
    Img2ImgRequest, NativeImg2Img = _img2img_models(limits, txt2img_fields, GenerateRequest)
    return RequestModels(GenerateRequest, Txt2ImgRequest, LoraWeight, Img2ImgRequest, NativeImg2Img)


def _img2img_models(limits: ApiLimits, txt2img_fields: dict, GenerateRequest) -> tuple[type, type]:  # noqa: N803
    """A1111's img2img request (txt2img's fields, images, mask options) and Visage's native one."""
    Upload = Annotated[str, Field(max_length=limits.max_upload_bytes * 4 // 3 + 64)]
    Img2ImgRequest = create_model(
        "StableDiffusionImg2ImgProcessingAPI", __config__=ConfigDict(extra="ignore", strict=True),
        **{**txt2img_fields, **A1111_IMG2IMG_IGNORED, **image_fields(limits, a1111=True)},
        init_images=(list[Upload], Field(..., min_length=1, max_length=limits.max_list)))
    Img2ImgRequest.__doc__ = "A1111's img2img request (a mask makes it inpainting); unused fields are ignored."
    NativeImg2Img = create_model(
        "Img2ImgRequest", __base__=GenerateRequest, **image_fields(limits, a1111=False),
        init_image=(Upload, Field(..., description="base64 image")))
    NativeImg2Img.__doc__ = "Visage's img2img / inpainting request: the generate fields, an image and a mask."
    return Img2ImgRequest, NativeImg2Img
