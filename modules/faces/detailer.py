"""The face detailer (ADetailer-style): after the images of a generation are decoded, find the faces, inpaint
each one again at a higher resolution with its own prompt, and paste it back through a blurred mask.

Per image: detect faces with MTCNN (:mod:`modules.faces.detect`; its weights are required: without them the
request is refused with ``faces.mtcnn_missing``, which names ``fetch-face-detector``: there is no silent
fallback to a detector without a confidence score), keep those scoring at least ``confidence`` (at most
``max_faces``, the largest), order them left to right, and for each face:

1. mask: the face box grown by ``dilation`` pixels (negative: shrunk), Gaussian-blurred by ``blur``;
2. crop: the blurred mask's bounding box grown by ``padding``, to a square (``masks.crop_region``), resized to
   ``resolution`` x ``resolution``;
3. inpaint the crop through the loaded backend's ``inpaint`` (the same pipeline: no reload) with the face's
   prompt, ``denoise``, the image's seed;
4. paste back: the crop's output resized into the crop box, composited through the full-size blurred mask,
   so every pixel where that mask is 0 (everything outside the padded face boxes) is the input's, exactly.

Prompts: ``prompt`` empty -> the main prompt; ``"a [SEP] b"`` -> face 1 gets ``a``, face 2 ``b``, later faces
the last one; an empty piece or ``[PROMPT]`` inside a piece means the main prompt (as ADetailer).

Torch-free at import time (the page and the API import :class:`DetailerSettings`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFilter

from modules.errors import InvalidRequest
from modules.messages import Message

DETECTOR_NAME = "mtcnn"
SEP = "[SEP]"
PROMPT_TOKEN = "[PROMPT]"
MAX_DILATION = 128
MAX_BLUR = 64
MAX_PADDING = 256
MAX_FACES = 32


@dataclass(frozen=True)
class DetailerSettings:
    enabled: bool = True
    prompt: str = ""  # "" = the main prompt; faces in order separated by [SEP]
    negative_prompt: str = ""  # "" = the main negative prompt; [SEP] as for prompt
    denoise: float = 0.4
    confidence: float = 0.3
    dilation: int = 4  # pixels the face box grows by (negative: shrinks)
    blur: int = 4  # Gaussian blur of the mask, pixels
    padding: int = 32  # context around the mask in the crop, pixels
    resolution: int = 512  # the crop is inpainted at resolution x resolution
    max_faces: int = 0  # 0 = all; else the largest N

    def check(self, *, size_multiple: int, min_side: int, max_side: int, max_chars: int,
              field: str = "detailer") -> None:
        """InvalidRequest(``detailer.<name>``, rule) for the first bad setting."""
        def bad(name, message):
            raise InvalidRequest(f"{field}.{name}", message)

        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > max_chars:
                bad(name, Message("rule.max_chars", n=max_chars))
        if not 0.0 < float(self.denoise) <= 1.0:
            bad("denoise", Message("rule.detailer_denoise"))
        if not 0.0 <= float(self.confidence) <= 1.0:
            bad("confidence", Message("rule.between", low=0, high=1))
        if not -MAX_DILATION <= int(self.dilation) <= MAX_DILATION:
            bad("dilation", Message("rule.between", low=-MAX_DILATION, high=MAX_DILATION))
        if not 0 <= int(self.blur) <= MAX_BLUR:
            bad("blur", Message("rule.between", low=0, high=MAX_BLUR))
        if not 0 <= int(self.padding) <= MAX_PADDING:
            bad("padding", Message("rule.between", low=0, high=MAX_PADDING))
        if int(self.resolution) % size_multiple:
            bad("resolution", Message("rule.multiple", n=size_multiple))
        if not min_side <= int(self.resolution) <= max_side:
            bad("resolution", Message("rule.between", low=min_side, high=max_side))
        if not 0 <= int(self.max_faces) <= MAX_FACES:
            bad("max_faces", Message("rule.between_off", high=MAX_FACES))

    def infotext(self, version: str) -> dict:
        """ADetailer's infotext keys (``ADetailer model`` names our detector, not a YOLO file)."""
        params = {"ADetailer model": DETECTOR_NAME}
        if self.prompt:
            params["ADetailer prompt"] = self.prompt
        if self.negative_prompt:
            params["ADetailer negative prompt"] = self.negative_prompt
        params |= {
            "ADetailer confidence": self.confidence, "ADetailer dilate erode": self.dilation,
            "ADetailer mask blur": self.blur, "ADetailer denoising strength": self.denoise,
            "ADetailer inpaint only masked": True, "ADetailer inpaint padding": self.padding,
            "ADetailer use inpaint width height": True, "ADetailer inpaint width": self.resolution,
            "ADetailer inpaint height": self.resolution,
        }
        if self.max_faces:
            params["ADetailer mask only top k largest"] = self.max_faces
        params["ADetailer version"] = version
        return params


def face_prompts(template: str, main: str, n: int) -> list[str]:
    """The prompt of each of ``n`` faces (see the module docstring)."""
    if not template.strip():
        return [main] * n
    pieces = [p.strip() for p in template.split(SEP)]
    out = []
    for i in range(n):
        piece = pieces[min(i, len(pieces) - 1)]
        out.append(piece.replace(PROMPT_TOKEN, main) if piece else main)
    return out


def select_faces(faces: list, confidence: float, max_faces: int = 0) -> list:
    """Faces scoring at least ``confidence``; the ``max_faces`` largest (0: all); ordered left to right."""
    kept = [f for f in faces if f.score >= confidence]
    if max_faces:
        kept = sorted(kept, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)[:max_faces]
    return sorted(kept, key=lambda f: (f.box[0], f.box[1]))


def face_mask(size: tuple[int, int], box, dilation: int, blur: int) -> Image.Image | None:
    """The full-size L mask of one face: its box grown by ``dilation``, blurred by ``blur``. None when the
    box shrinks to nothing."""
    w, h = size
    x0, y0 = max(0, round(box[0]) - dilation), max(0, round(box[1]) - dilation)
    x1, y1 = min(w, round(box[2]) + dilation), min(h, round(box[3]) + dilation)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask


def paste_face(image: Image.Image, output: Image.Image, crop: tuple[int, int, int, int],
               mask: Image.Image) -> Image.Image:
    """``output`` (the crop's inpainted picture) resized into ``crop`` of ``image``, through ``mask``."""
    layer = image.copy()
    layer.paste(output.convert("RGB").resize((crop[2] - crop[0], crop[3] - crop[1]), Image.LANCZOS), crop[:2])
    return Image.composite(layer, image, mask)


@dataclass
class DetailedFace:
    box: tuple[float, float, float, float]
    score: float
    crop: tuple[int, int, int, int]
    prompt: str


def detail_image(image: Image.Image, seed: int, req, settings: DetailerSettings, *, detect: Callable,
                 inpaint: Callable, check_cancelled: Callable[[], None] = lambda: None):
    """One image through the detailer -> (image, [DetailedFace]). ``req`` is the checked generation request
    (its prompt without <lora:> tags); ``detect(rgb) -> [DetectedFace]``; ``inpaint(sub_request) -> output``
    with ``.images`` (the backend's inpaint with the job's context and encoder bound)."""
    import numpy as np

    from modules.generation.masks import crop_region

    image = image.convert("RGB")
    faces = select_faces(detect(np.asarray(image)), settings.confidence, settings.max_faces)
    prompts = face_prompts(settings.prompt, req.prompt, len(faces))
    negatives = face_prompts(settings.negative_prompt, req.negative_prompt, len(faces))
    res = int(settings.resolution)
    done = []
    for face, prompt, negative in zip(faces, prompts, negatives):
        check_cancelled()
        mask = face_mask(image.size, face.box, int(settings.dilation), int(settings.blur))
        crop = crop_region(mask, int(settings.padding), res, res) if mask is not None else None
        if crop is None:
            continue
        sub = replace(
            req, prompt=prompt, negative_prompt=negative, seed=seed, width=res, height=res, batch_size=1,
            batch_count=1, init_image=image.crop(crop).resize((res, res), Image.LANCZOS),
            mask=mask.crop(crop).resize((res, res), Image.LANCZOS), denoising_strength=float(settings.denoise),
            mask_blur=0, inpaint_full_res=False, inpainting_fill=1, inpainting_mask_invert=False, resize_mode=0,
            preview_every=0, decoder="vae", save=False, detailer=None)
        output = inpaint(sub).images[0]
        image = paste_face(image, output, crop, mask)
        done.append(DetailedFace(tuple(face.box), float(face.score), crop, prompt))
    return image, done


_DETECTORS: dict = {}


def load_detector(models_dir: Path, device: str = "cpu"):
    """MTCNN from ``models/face-detection/mtcnn`` (cached); MissingComponent naming fetch-face-detector."""
    from modules.faces.detect import MtcnnDetector
    from modules.faces.weights import mtcnn_folder

    folder = mtcnn_folder(models_dir)
    key = (str(folder), device)
    if key not in _DETECTORS:
        _DETECTORS[key] = MtcnnDetector.from_folder(folder, device=device)
    return _DETECTORS[key]


def run_detailer(images: list, seeds: list[int], req, *, detect: Callable, inpaint: Callable,
                 report: Callable = lambda *a, **k: None, check_cancelled: Callable[[], None] = lambda: None):
    """Every image of a job through :func:`detail_image` -> (images, notes, faces per image)."""
    settings = req.detailer
    out, notes, found = [], [], []
    for i, (image, seed) in enumerate(zip(images, seeds)):
        report("face detailer", i, len(images))
        new, faces = detail_image(image, seed, req, settings, detect=detect, inpaint=inpaint,
                                  check_cancelled=check_cancelled)
        if not faces:
            notes.append(Message("note.detailer_no_face", index=i + 1, confidence=settings.confidence))
            new = image
        out.append(new)
        found.append(faces)
    return out, notes, found
