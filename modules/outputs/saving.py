"""Save generated images as PNG with A1111's ``parameters`` chunk, and read it back. Torch-free.

Layout (A1111's): ``<out_dir>/YYYY-MM-DD/NNNNN-SEED.png`` with a 5-digit counter per day folder.
"""
from __future__ import annotations

import io
import os
import re
import threading
from datetime import datetime
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from modules.atomic import write_bytes_exclusive
from modules.errors import InvalidRequest

PARAMETERS_KEY = "parameters"
MAX_READ_PIXELS = 50_000_000
MAX_READ_BYTES = 50 * 1024 * 1024

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_COUNTER_RE = re.compile(r"^(\d+)(?:-|\.|$)")
#: serialises counter choice between threads of this process; the exclusive create covers the rest
_SAVE_LOCK = threading.Lock()


def next_counter(folder: Path) -> int:
    """A1111's sequence number: one more than the largest leading number of a file name (0 if none)."""
    highest = -1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        match = _COUNTER_RE.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    """Encode ``image`` as PNG with ``infotext`` in a ``parameters`` chunk.

    tEXt when the text is Latin-1, else iTXt (UTF-8), as A1111 writes it.
    """
    info = PngImagePlugin.PngInfo()
    if infotext:
        try:
            infotext.encode("latin-1")
        except UnicodeEncodeError:
            info.add_itxt(PARAMETERS_KEY, infotext)
        else:
            info.add_text(PARAMETERS_KEY, infotext)
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, infotext: str | None, out_dir: Path, seed: int,
             now: datetime | None = None) -> Path:
    """Write ``out_dir/YYYY-MM-DD/NNNNN-SEED.png`` atomically; returns the path.

    Safe with concurrent callers: the counter is chosen under a lock and the file is created
    exclusively, so two saves never share a name.
    """
    day = (now or datetime.now()).strftime("%Y-%m-%d")
    folder = Path(out_dir) / day
    data = png_bytes(image, infotext)
    with _SAVE_LOCK:
        folder.mkdir(parents=True, exist_ok=True)
        counter = next_counter(folder)
        while True:
            path = folder / f"{counter:05d}-{int(seed)}.png"
            try:
                return write_bytes_exclusive(path, data)
            except FileExistsError:  # another process took it meanwhile
                counter = max(counter + 1, next_counter(folder))


def _decode_user_comment(raw) -> str | None:
    """EXIF UserComment: 8-byte charset header (``UNICODE``, ``ASCII``, zeros) then the text."""
    if isinstance(raw, str):
        return raw.rstrip("\x00") or None
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        return None
    raw = bytes(raw)
    header, body = raw[:8], raw[8:]
    if header == b"UNICODE\x00":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16", errors="replace")
        else:
            # A1111 (piexif) writes big-endian; guess from which bytes of ASCII-range pairs are zero
            even_zero = sum(1 for b in body[0::2] if b == 0)
            odd_zero = sum(1 for b in body[1::2] if b == 0)
            text = body.decode("utf-16-le" if odd_zero > even_zero else "utf-16-be", errors="replace")
    elif header in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\x00") or None


def _parameters_from_open_image(image: Image.Image) -> str | None:
    width, height = image.size
    if width * height > MAX_READ_PIXELS:
        raise InvalidRequest("image", f"{width}x{height} is over {MAX_READ_PIXELS // 1_000_000} megapixels")
    text = image.info.get(PARAMETERS_KEY)
    if text is None and image.format == "PNG" and getattr(image, "fp", None) is not None:
        image.load()  # text chunks after the image data are read only here
        text = image.info.get(PARAMETERS_KEY)
    if text is not None:
        return str(text)
    try:
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except (OSError, ValueError, SyntaxError):  # broken EXIF
        comment = None
    text = _decode_user_comment(comment)
    if text is None and isinstance(image.info.get("comment"), (bytes, str)):
        comment = image.info["comment"]
        text = (comment.decode("utf-8", errors="replace") if isinstance(comment, bytes) else comment) or None
    return text


def read_png_parameters(source: str | os.PathLike | bytes | Image.Image) -> str | None:
    """The A1111 ``parameters`` text of an image, or None if it has none.

    ``source``: a path, the file's bytes, or an open PIL image. Reads PNG tEXt/iTXt/zTXt and
    JPEG/WebP EXIF UserComment. Raises ``InvalidRequest`` for files over 50 MB, images over
    50 megapixels, and data that is not an image.
    """
    if isinstance(source, Image.Image):
        return _parameters_from_open_image(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_READ_BYTES:
            raise InvalidRequest("image", f"file is over {MAX_READ_BYTES // (1024 * 1024)} MB")
        opener = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise InvalidRequest("image", f"no such file: {path.name}") from None
        if size > MAX_READ_BYTES:
            raise InvalidRequest("image", f"file is over {MAX_READ_BYTES // (1024 * 1024)} MB")
        opener = path
    try:
        with Image.open(opener) as image:
            return _parameters_from_open_image(image)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidRequest("image", f"not a readable image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise InvalidRequest("image", f"damaged image file ({exc})") from None
