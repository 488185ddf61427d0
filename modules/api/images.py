"""Images in and out of the API: base64 PNGs with infotext, and size-limited uploads. Torch-free."""
from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from modules.errors import InvalidRequest
from modules.outputs.saving import MAX_READ_PIXELS, PARAMETERS_KEY, png_bytes


def encode_png(image, infotext: str | None = None) -> str:
    """base64 PNG of a PIL image, with ``infotext`` in its ``parameters`` chunk."""
    return base64.b64encode(png_bytes(image, infotext)).decode("ascii")


def decode_upload(data: str, max_bytes: int, field: str = "image") -> bytes:
    """The bytes of a base64 upload (``data:image/png;base64,`` prefix allowed), refused over ``max_bytes``
    before decoding."""
    if not isinstance(data, str) or not data.strip():
        raise InvalidRequest(field, "must be a base64-encoded image")
    text = data.strip()
    if text.startswith("data:"):
        _prefix, sep, text = text.partition(",")
        if not sep:
            raise InvalidRequest(field, "data: URL without a comma")
    if len(text) > max_bytes * 4 // 3 + 8:
        raise InvalidRequest(field, f"image is over {max_bytes // (1024 * 1024)} MB")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, "is not valid base64") from None
    if len(raw) > max_bytes:
        raise InvalidRequest(field, f"image is over {max_bytes // (1024 * 1024)} MB")
    return raw


def text_items(raw: bytes) -> dict[str, str]:
    """Text chunks of an already size-checked image besides ``parameters`` (A1111's ``items``)."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > MAX_READ_PIXELS:
                return {}
            return {str(k): v for k, v in image.info.items()
                    if k != PARAMETERS_KEY and isinstance(v, str) and len(v) <= 65536}
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return {}
