"""A generation request as plain data, with diffusers-style ``check_inputs``. Torch-free."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from PIL import Image

from modules.errors import InvalidRequest
from modules.faces.detailer import DetailerSettings
from modules.families import Family, family_info
from modules.messages import Message

MAX_PROMPT_CHARS = 4000
MAX_STEPS = 150
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 16
MAX_SEED = 2**32 - 1
DECODERS = ("vae", "taesd")
BACKENDS = ("auto", "diffusers", "onnx")
RESIZE_MODES = ("0 (just resize)", "1 (crop and resize)", "2 (resize and fill)")
INPAINTING_FILLS = ("0 (fill)", "1 (original)", "2 (latent noise)", "3 (latent nothing)")
MAX_MASK_BLUR = 64
MAX_INPAINT_PADDING = 256
IMAGE_FIELDS = ("init_image", "mask")  # PIL images: left out of to_dict()
#: hires fix upscalers: latent interpolation, or decode + PIL resize + re-encode (no model upscalers yet)
HR_UPSCALERS = ("Latent", "Latent (nearest)", "Lanczos", "Nearest")
MAX_HR_SCALE = 4.0


@dataclass
class GenerationRequest:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None  # None: the family's default
    cfg_scale: float | None = None
    seed: int = -1  # -1: random; image i of the batch uses seed + i
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    batch_size: int = 1  # images per pipeline call
    batch_count: int = 1  # pipeline calls
    clip_skip: int = 1  # A1111 meaning: 1 = last layer
    model: str | None = None  # None: the current model
    preset: str | None = None  # recorded in infotext ("Preset: ID")
    styles: list[str] = field(default_factory=list)
    loras: list[tuple[str, float]] = field(default_factory=list)  # (name, weight) besides <lora:…> tags
    save: bool = True
    extra_infotext: dict = field(default_factory=dict)  # later features add fields here
    preview_every: int = 0  # live TAESD preview every N steps (0 = none)
    decoder: str = "vae"  # final decode: "vae" (full VAE; an edge package's best decoder) | "taesd" (fast)
    backend: str = "auto"  # auto (by model: edge packages -> onnx) | diffusers | onnx
    postprocess: list[str] = field(default_factory=list)  # extension post-processor ids (the engine checks them)
    # img2img / inpainting (A1111 meanings); an init image makes it img2img, a mask too makes it inpainting
    init_image: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint, black = keep
    denoising_strength: float = 0.75
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill
    mask_blur: int = 4
    inpaint_full_res: bool = False  # "only masked": inpaint a padded crop around the mask at full resolution
    inpaint_full_res_padding: int = 32
    inpainting_fill: int = 1  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpainting_mask_invert: bool = False
    detailer: DetailerSettings | None = None  # the face detailer (modules/faces/detailer.py); None = off
    # hires fix (txt2img, A1111 meanings): first pass at width x height, upscale, second pass img2img
    enable_hr: bool = False
    hr_scale: float = 2.0  # the second pass's size: the first pass's x this (unless hr_resize_x/y are given)
    hr_upscaler: str = "Latent"  # one of HR_UPSCALERS
    hr_second_pass_steps: int = 0  # 0: the same as steps
    hr_denoising_strength: float = 0.7
    hr_resize_x: int = 0  # 0: from hr_scale (or, with hr_resize_y alone, keeping the aspect ratio)
    hr_resize_y: int = 0

    def with_defaults(self, family: Family) -> "GenerationRequest":
        """Fill unset fields from the family's defaults."""
        info = family_info(family)
        width, height = info.width, info.height
        if isinstance(self.init_image, Image.Image):  # img2img: the init image's size, to the size multiple
            width, height = (max(info.min_side, min(info.max_side, side - side % info.size_multiple))
                             for side in self.init_image.size)
        return replace(
            self,
            steps=self.steps if self.steps is not None else info.steps,
            cfg_scale=self.cfg_scale if self.cfg_scale is not None else info.cfg,
            width=self.width or width,
            height=self.height or height,
            sampler=self.sampler or info.default_sampler,
        )

    def check_inputs(self, family: Family) -> None:
        """Raise ``InvalidRequest(field, rule)`` for the first bad field. Call after ``with_defaults``."""
        info = family_info(family)
        if not isinstance(self.prompt, str) or len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", Message("rule.max_chars", n=MAX_PROMPT_CHARS))
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("negative_prompt", Message("rule.max_chars", n=MAX_PROMPT_CHARS))
        if not 1 <= int(self.steps) <= MAX_STEPS:
            raise InvalidRequest("steps", Message("rule.between", low=1, high=MAX_STEPS))
        if not 0.0 <= float(self.cfg_scale) <= 30.0:
            raise InvalidRequest("cfg_scale", Message("rule.between", low=0, high=30))
        for name in ("width", "height"):
            value = int(getattr(self, name))
            if value % info.size_multiple:
                raise InvalidRequest(name, Message("rule.multiple", n=info.size_multiple))
            if not info.min_side <= value <= info.max_side:
                raise InvalidRequest(name, Message("rule.between", low=info.min_side, high=info.max_side))
        if not -1 <= int(self.seed) <= MAX_SEED:
            raise InvalidRequest("seed", Message("rule.seed", high=MAX_SEED))
        if not 1 <= int(self.batch_size) <= MAX_BATCH_SIZE:
            raise InvalidRequest("batch_size", Message("rule.between", low=1, high=MAX_BATCH_SIZE))
        if not 1 <= int(self.batch_count) <= MAX_BATCH_COUNT:
            raise InvalidRequest("batch_count", Message("rule.between", low=1, high=MAX_BATCH_COUNT))
        if self.sampler not in info.samplers:
            raise InvalidRequest("sampler", Message("rule.one_of", choices=", ".join(info.samplers), family=info.label))
        if not 1 <= int(self.clip_skip) <= 12:
            raise InvalidRequest("clip_skip", Message("rule.between", low=1, high=12))
        if not 0 <= int(self.preview_every) <= MAX_STEPS:
            raise InvalidRequest("preview_every", Message("rule.between_off", high=MAX_STEPS))
        if self.decoder not in DECODERS:
            raise InvalidRequest("decoder", Message("rule.choice", choices=", ".join(DECODERS)))
        if self.backend not in BACKENDS:
            raise InvalidRequest("backend", Message("rule.choice", choices=", ".join(BACKENDS)))
        if isinstance(self.postprocess, str) or not all(isinstance(x, str) for x in self.postprocess or ()):
            raise InvalidRequest("postprocess", Message("rule.postprocess_ids"))
        self.check_image_inputs()
        if self.detailer is not None:
            if not isinstance(self.detailer, DetailerSettings):
                raise InvalidRequest("detailer", Message("rule.detailer_settings"))
            self.detailer.check(size_multiple=info.size_multiple, min_side=info.min_side, max_side=info.max_side,
                                max_chars=MAX_PROMPT_CHARS)
        self.check_hires_inputs(family)

    def check_image_inputs(self) -> None:
        """The img2img / inpainting rules (nothing to check without an init image or mask)."""
        if self.init_image is not None and not isinstance(self.init_image, Image.Image):
            raise InvalidRequest("init_image", Message("rule.image"))
        if self.mask is not None:
            if not isinstance(self.mask, Image.Image):
                raise InvalidRequest("mask", Message("rule.image"))
            if self.init_image is None:
                raise InvalidRequest("mask", Message("rule.mask_needs_image"))
            if self.mask.size != self.init_image.size:
                raise InvalidRequest("mask", Message("rule.mask_size", size="%dx%d" % self.init_image.size,
                                                     got="%dx%d" % self.mask.size))
        if not 0.0 <= float(self.denoising_strength) <= 1.0:
            raise InvalidRequest("denoising_strength", Message("rule.between", low=0, high=1))
        if int(self.resize_mode) not in range(len(RESIZE_MODES)):
            raise InvalidRequest("resize_mode", Message("rule.choice", choices=", ".join(RESIZE_MODES)))
        if not 0 <= int(self.mask_blur) <= MAX_MASK_BLUR:
            raise InvalidRequest("mask_blur", Message("rule.between", low=0, high=MAX_MASK_BLUR))
        if not 0 <= int(self.inpaint_full_res_padding) <= MAX_INPAINT_PADDING:
            raise InvalidRequest("inpaint_full_res_padding", Message("rule.between", low=0, high=MAX_INPAINT_PADDING))
        if int(self.inpainting_fill) not in range(len(INPAINTING_FILLS)):
            raise InvalidRequest("inpainting_fill", Message("rule.choice", choices=", ".join(INPAINTING_FILLS)))

    def check_hires_inputs(self, family: Family) -> None:
        """The hires fix rules (nothing to check when it is off)."""
        if not self.enable_hr:
            return
        if self.init_image is not None:
            raise InvalidRequest("enable_hr", Message("rule.hires_txt2img"))
        if self.hr_upscaler not in HR_UPSCALERS:
            raise InvalidRequest("hr_upscaler", Message("rule.choice", choices=", ".join(HR_UPSCALERS)))
        if not 1.0 <= float(self.hr_scale) <= MAX_HR_SCALE:
            raise InvalidRequest("hr_scale", Message("rule.between", low=1, high=int(MAX_HR_SCALE)))
        if not 0 <= int(self.hr_second_pass_steps) <= MAX_STEPS:
            raise InvalidRequest("hr_second_pass_steps", Message("rule.between", low=0, high=MAX_STEPS))
        if not 0.0 < float(self.hr_denoising_strength) <= 1.0:
            raise InvalidRequest("hr_denoising_strength", Message("rule.hires_denoise"))
        info = family_info(family)
        for name in ("hr_resize_x", "hr_resize_y"):
            if not 0 <= int(getattr(self, name)) <= info.max_side:
                raise InvalidRequest(name, Message("rule.between", low=0, high=info.max_side))
        width, height = self.hires_size(family)
        if not (info.min_side <= width <= info.max_side and info.min_side <= height <= info.max_side):
            raise InvalidRequest("hr_resize_x" if self.hr_resize_x or self.hr_resize_y else "hr_scale",
                                 Message("rule.hires_size", size=f"{width}x{height}", low=info.min_side,
                                         high=info.max_side))

    def hires_size(self, family: Family) -> tuple[int, int]:
        """The second pass's (width, height), down to the family's size multiple (A1111's rules: the scale,
        or hr_resize_x / hr_resize_y, one of them alone keeping the first pass's aspect ratio)."""
        multiple = family_info(family).size_multiple
        width, height = int(self.width), int(self.height)
        rx, ry = int(self.hr_resize_x), int(self.hr_resize_y)
        if rx == 0 and ry == 0:
            tw, th = int(width * float(self.hr_scale)), int(height * float(self.hr_scale))
        elif ry == 0:
            tw, th = rx, rx * height // width
        elif rx == 0:
            tw, th = ry * width // height, ry
        else:
            tw, th = rx, ry
        return tw - tw % multiple, th - th % multiple

    @property
    def capability_name(self) -> str:
        """``txt2img``, ``img2img`` (an init image) or ``inpaint`` (an init image and a mask)."""
        if self.init_image is None:
            return "txt2img"
        return "img2img" if self.mask is None else "inpaint"

    def to_dict(self) -> dict:
        """Plain data (the PIL images are left out: they are said as their sizes)."""
        data = asdict(replace(self, init_image=None, mask=None))
        for name in IMAGE_FIELDS:
            image = getattr(self, name)
            data[name] = None if image is None else {"width": image.size[0], "height": image.size[1]}
        return data


@dataclass
class GenerationResult:
    """What a finished job hands back. ``images`` are PIL images (no torch types cross this line)."""

    images: list
    seeds: list[int]
    infotexts: list[str]
    paths: list[str]
    model: str
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. LoRA keys that matched no module
