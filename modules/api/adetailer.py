"""ADetailer's request shape on /sdapi/v1/txt2img|img2img, and the native ``detailer`` object. Torch-free.

A client that uses the ADetailer extension sends::

    "alwayson_scripts": {"ADetailer": {"args": [true, false, {"ad_model": "face_yolov8n.pt", "ad_prompt": "...",
        "ad_denoising_strength": 0.4, "ad_confidence": 0.3, "ad_mask_blur": 4, "ad_dilate_erode": 4,
        "ad_inpaint_only_masked_padding": 32, ...}]}}

``args``: optional leading booleans (enabled, skip img2img), then one dict per ADetailer unit. Visage runs the
first unit whose ``ad_model`` is not ``"None"``; its model name is replaced by Visage's detector (MTCNN, faces
only: a hand or person model still details faces). Keys mapped: ad_prompt, ad_negative_prompt,
ad_denoising_strength, ad_confidence, ad_dilate_erode, ad_mask_blur, ad_inpaint_only_masked_padding,
ad_use_inpaint_width_height + ad_inpaint_width (else the family's size), ad_mask_k_largest. Others are ignored.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modules.errors import InvalidRequest
from modules.faces.detailer import DetailerSettings
from modules.messages import Message

SCRIPT = "adetailer"
DETAILER_RESOLUTION = 512  # the native API's default crop size (its request does not know the family yet)
#: ad_* key -> (DetailerSettings field, type)
KEYS = {
    "ad_prompt": ("prompt", str), "ad_negative_prompt": ("negative_prompt", str),
    "ad_denoising_strength": ("denoise", float), "ad_confidence": ("confidence", float),
    "ad_dilate_erode": ("dilation", int), "ad_mask_blur": ("blur", int),
    "ad_inpaint_only_masked_padding": ("padding", int), "ad_mask_k_largest": ("max_faces", int),
}


def _script(scripts: dict | None):
    for name, value in (scripts or {}).items():
        if isinstance(name, str) and name.lower() == SCRIPT:
            return name, value
    return None, None


def uses_only_adetailer(scripts: dict | None) -> bool:
    """Whether ADetailer is the only always-on script sent (then nothing in alwayson_scripts is ignored)."""
    return bool(scripts) and len(scripts) == 1 and _script(scripts)[0] is not None


def detailer_from_scripts(scripts: dict | None, *, resolution: int, img2img: bool = False) -> DetailerSettings | None:
    """ADetailer's ``alwayson_scripts`` entry -> DetailerSettings (None: not sent, off, or skipped for img2img)."""
    name, value = _script(scripts)
    if name is None:
        return None
    where = f"alwayson_scripts.{name}.args"
    args = value.get("args") if isinstance(value, dict) else value
    if not isinstance(args, list):
        raise InvalidRequest(where, Message("rule.adetailer_args"))
    flags = []
    for item in args:
        if not isinstance(item, bool):
            break
        flags.append(item)
    if flags and not flags[0]:
        return None
    if img2img and len(flags) > 1 and flags[1]:  # "skip img2img"
        return None
    for i, unit in enumerate(args[len(flags):], start=len(flags)):
        if not isinstance(unit, dict):
            raise InvalidRequest(f"{where}.{i}", Message("rule.adetailer_args"))
        if str(unit.get("ad_model", "")).strip().lower() in ("none", ""):
            continue
        return _settings(unit, f"{where}.{i}", resolution)
    return None


def _settings(unit: dict, where: str, resolution: int) -> DetailerSettings:
    fields: dict[str, Any] = {"resolution": resolution}
    for key, (field, kind) in KEYS.items():
        if key not in unit or unit[key] is None:
            continue
        value = unit[key]
        if kind is str:
            if not isinstance(value, str):
                raise InvalidRequest(f"{where}.{key}", Message("rule.text"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{where}.{key}", Message("rule.number"))
        elif kind is int and value != int(value):
            raise InvalidRequest(f"{where}.{key}", Message("rule.whole"))
        fields[field] = kind(value)
    if unit.get("ad_use_inpaint_width_height") and unit.get("ad_inpaint_width"):
        width = unit["ad_inpaint_width"]
        if isinstance(width, bool) or not isinstance(width, int):
            raise InvalidRequest(f"{where}.ad_inpaint_width", Message("rule.whole"))
        fields["resolution"] = width
    return DetailerSettings(**fields)


class DetailerRequest(BaseModel):
    """The native API's ``detailer`` object (modules/faces/detailer.py); the engine checks the ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool = True
    prompt: str = Field("", max_length=4000, description="'' = the main prompt; one per face with [SEP]")
    negative_prompt: str = Field("", max_length=4000)
    denoise: float = 0.4
    confidence: float = 0.3
    dilation: int = 4
    blur: int = 4
    padding: int = 32
    resolution: int | None = Field(None, description="default: the family's size (512 for SD1.5)")
    max_faces: int = Field(0, description="0 = all; else the largest N")


def native_detailer(body: DetailerRequest | None, resolution: int) -> DetailerSettings | None:
    if body is None:
        return None
    data = body.model_dump()
    data["resolution"] = data["resolution"] or resolution
    return DetailerSettings(**data)
