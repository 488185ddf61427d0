"""Image and mask preparation for img2img and inpainting, as A1111 does it, in PIL. Torch-free.

Resize modes (``resize_image``), mask blur and invert (``prepare_mask``), "only masked" crop regions at full
resolution with padding (``crop_region``), masked-content fill (``fill_masked``) and the paste-back with the
blurred mask (``paste_back``): pixels where the blurred mask is 0 are the input's, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter, ImageOps

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = 0, 1, 2
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3


def resize_image(image: Image.Image, width: int, height: int, mode: int = JUST_RESIZE) -> Image.Image:
    """0: stretch to the size; 1: scale to cover, centre crop; 2: scale to fit, fill the rest from the edges."""
    if image.size == (width, height):
        return image.copy()
    if mode == JUST_RESIZE:
        return image.resize((width, height), Image.LANCZOS)
    w, h = image.size
    cover = mode == CROP_AND_RESIZE
    scale = max(width / w, height / h) if cover else min(width / w, height / h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = image.resize((sw, sh), Image.LANCZOS)
    if cover:
        left, top = (sw - width) // 2, (sh - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    out = scaled.resize((width, height), Image.LANCZOS)  # background: the stretched image, then the edges
    left, top = (width - sw) // 2, (height - sh) // 2
    if top > 0:
        out.paste(scaled.crop((0, 0, sw, 1)).resize((sw, top)), (left, 0))
        out.paste(scaled.crop((0, sh - 1, sw, sh)).resize((sw, height - top - sh)), (left, top + sh))
    if left > 0:
        out.paste(scaled.crop((0, 0, 1, sh)).resize((left, sh)), (0, top))
        out.paste(scaled.crop((sw - 1, 0, sw, sh)).resize((width - left - sw, sh)), (left + sw, top))
    out.paste(scaled, (left, top))
    return out


def prepare_mask(mask: Image.Image, *, blur: int, invert: bool) -> Image.Image:
    """Grey-scale mask (white = repaint), inverted if asked, Gaussian-blurred by ``blur`` pixels."""
    mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """"Only masked": the mask's bounding box grown by ``padding``, then grown to the ``width:height`` aspect
    ratio, inside the image. None for an empty mask."""
    box = mask.getbbox()
    if box is None:
        return None
    iw, ih = mask.size
    x1, y1 = max(box[0] - padding, 0), max(box[1] - padding, 0)
    x2, y2 = min(box[2] + padding, iw), min(box[3] + padding, ih)
    ratio = width / height
    if (x2 - x1) / (y2 - y1) < ratio:  # too narrow: widen
        x1, x2 = _grow(x1, x2, round((y2 - y1) * ratio), iw)
    else:  # too flat: heighten
        y1, y2 = _grow(y1, y2, round((x2 - x1) / ratio), ih)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    want = min(want, limit)
    extra = want - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), hi


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area painted with ever blurrier copies of the surroundings."""
    image = image.convert("RGB")
    keep = ImageOps.invert(mask.point(lambda v: 255 if v > 127 else 0))
    out = Image.new("RGB", image.size, _mean_colour(image, keep))
    for radius in (256, 64, 16, 4, 1, 0):
        blurred = image.filter(ImageFilter.GaussianBlur(radius)) if radius else image
        weight = keep.filter(ImageFilter.GaussianBlur(radius)) if radius else keep
        out = Image.composite(blurred, out, weight.point(lambda v: 255 if v > 0 else 0))
    return Image.composite(image, out, keep)


def _mean_colour(image: Image.Image, keep: Image.Image) -> tuple[int, ...]:
    if keep.getbbox() is None:
        return (127, 127, 127)
    return tuple(int(c) for c in image.resize((1, 1), Image.BOX, box=keep.getbbox()).getpixel((0, 0)))


def paste_back(original: Image.Image, generated: Image.Image, mask: Image.Image,
               box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """``generated`` over ``original`` through the blurred ``mask`` (original's size); with ``box`` (only
    masked), ``generated`` is the crop's output, resized back into ``box`` first."""
    original = original.convert("RGB")
    layer = original.copy()
    if box is None:
        layer = generated.convert("RGB").resize(original.size, Image.LANCZOS)
    else:
        layer.paste(generated.convert("RGB").resize((box[2] - box[0], box[3] - box[1]), Image.LANCZOS), box[:2])
    return Image.composite(layer, original, mask)


@dataclass
class PreparedImages:
    """What the pipeline is given (``image``, ``mask`` at the request's size) and how to paste it back."""

    image: Image.Image
    mask: Image.Image | None
    original: Image.Image  # the canvas the output is pasted onto
    paste_mask: Image.Image | None  # blurred mask at the canvas size
    box: tuple[int, int, int, int] | None = None  # "only masked" region of the canvas


def prepare_images(req) -> PreparedImages:
    """A checked request's init image (and mask) -> what the pipeline gets. See the module docstring."""
    w, h = req.width, req.height
    if req.mask is None:
        image = resize_image(req.init_image.convert("RGB"), w, h, req.resize_mode)
        return PreparedImages(image=image, mask=None, original=image, paste_mask=None)
    mask = prepare_mask(req.mask, blur=req.mask_blur, invert=req.inpainting_mask_invert)
    box = crop_region(mask, req.inpaint_full_res_padding, w, h) if req.inpaint_full_res else None
    if box is not None:  # full resolution: the canvas is the init image itself
        original = req.init_image.convert("RGB")
        image, crop_mask = (x.crop(box).resize((w, h), Image.LANCZOS) for x in (original, mask))
    else:
        original = resize_image(req.init_image.convert("RGB"), w, h, req.resize_mode)
        mask = resize_image(mask, w, h, req.resize_mode)
        image, crop_mask = original, mask
    if req.inpainting_fill == FILL:
        image = fill_masked(image, crop_mask)
    return PreparedImages(image=image, mask=crop_mask, original=original, paste_mask=mask, box=box)


def changed_box(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels that differ (tests and checks)."""
    return ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox()
