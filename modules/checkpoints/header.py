"""The one safetensors header reader: tensor names, dtypes, shapes and metadata, without loading weights.

Format: 8-byte little-endian header length N, then N bytes of UTF-8 JSON, then the raw data.
Every bound is checked so that empty, truncated or garbage files give a short reason instead
of a crash; a file whose tensors run past its end is reported as truncated. One size limit for the
whole project: :data:`MAX_HEADER_BYTES`, the safetensors library's own. Torch-free and numpy-free.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modules.errors import ModelLoadError

#: the safetensors library refuses headers larger than this; so do we
MAX_HEADER_BYTES = 100_000_000

#: bytes per element of the dtypes whose size is a whole number of bytes
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


class SafetensorsHeaderError(ModelLoadError):
    """The file is not a readable safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets inside the data section
    end: int


@dataclass
class SafetensorsHeader:
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    header_bytes: int = 0
    file_size: int = 0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}


def _parse_tensor(name: str, raw: object, data_len: int) -> TensorInfo:
    if not isinstance(raw, dict):
        raise SafetensorsHeaderError(f"tensor {name!r}: entry is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if not isinstance(dtype, str):
        raise SafetensorsHeaderError(f"tensor {name!r}: missing dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise SafetensorsHeaderError(f"tensor {name!r}: invalid shape")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise SafetensorsHeaderError(f"tensor {name!r}: invalid data_offsets")
    start, end = offsets
    if start < 0 or end < start:
        raise SafetensorsHeaderError(f"tensor {name!r}: invalid data_offsets")
    if end > data_len:
        raise SafetensorsHeaderError(
            f"file is truncated: tensor {name!r} ends at byte {end} of a {data_len}-byte data section")
    size = DTYPE_BYTES.get(dtype)
    if size is not None:
        numel = 1
        for d in shape:
            numel *= d
        if numel * size != end - start:
            raise SafetensorsHeaderError(f"tensor {name!r}: size does not match its dtype and shape")
    return TensorInfo(dtype=dtype, shape=tuple(shape), start=start, end=end)


def parse_header(prefix: bytes, file_size: int) -> SafetensorsHeader:
    """Parse a header from the first bytes of a file (``8 + N`` of them) and the file's size."""
    if file_size == 0:
        raise SafetensorsHeaderError("file is empty")
    if file_size < 8 or len(prefix) < 8:
        raise SafetensorsHeaderError("file is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n == 0:
        raise SafetensorsHeaderError("header length is zero")
    if n > MAX_HEADER_BYTES:
        raise SafetensorsHeaderError("header length is implausibly large (not a safetensors file?)")
    if 8 + n > file_size or len(prefix) < 8 + n:
        raise SafetensorsHeaderError("file is truncated inside its header")
    try:
        doc = json.loads(prefix[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsHeaderError(f"header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise SafetensorsHeaderError("header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsHeaderError("__metadata__ is not a string-to-string map")
    data_len = file_size - 8 - n
    tensors = {name: _parse_tensor(name, raw, data_len) for name, raw in doc.items()}
    return SafetensorsHeader(tensors=tensors, metadata=dict(meta), header_bytes=n, file_size=file_size)


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and validate the header of ``path``. Raises SafetensorsHeaderError with a short reason."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            if len(first) < 8:
                return parse_header(first, file_size)
            (n,) = struct.unpack("<Q", first)
            if n == 0 or n > MAX_HEADER_BYTES or 8 + n > file_size:
                return parse_header(first, file_size)
            rest = f.read(n)
    except OSError as exc:
        raise SafetensorsHeaderError(f"cannot read file: {exc.strerror or exc}") from None
    return parse_header(first + rest, file_size)


def data_start(f: BinaryIO) -> int:
    """Offset of the data section of the open safetensors file ``f`` (read from its first 8 bytes);
    0 when the file is too short to have one. Leaves ``f`` positioned after those bytes."""
    first = f.read(8)
    if len(first) < 8:
        return 0
    (n,) = struct.unpack("<Q", first)
    return 8 + n
