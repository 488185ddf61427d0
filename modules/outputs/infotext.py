"""A1111's "parameters" text (infotext): build, parse, and map to request fields. Torch-free.

Format (the one A1111 writes into PNGs)::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>     (omitted when empty)
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, Size: 512x768, ...

A value holding ``,`` ``:`` ``"`` or a newline is written as a JSON string.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from modules.errors import InvalidRequest

NEGATIVE_PREFIX = "Negative prompt:"

#: one ``Key: value`` pair of the parameters line (A1111's pattern): keys start with a word
#: character and may contain spaces, ``-`` and ``/``; values are JSON strings or run to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
#: keys we write must parse back: two or more characters, no edge spaces
_KEY_RE = re.compile(r"^\w[\w \-/]*[\w\-/]$")
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
#: the last line counts as the parameters line only with at least this many pairs (as A1111)
_MIN_PARAMS = 3


def format_value(value) -> str:
    """Text for one value: integral floats lose their ``.0`` (CFG 7.0 -> ``7``), others as ``str``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def quote(text: str) -> str:
    """JSON-quote ``text`` when it holds ``,`` ``:`` ``"``, a newline or edge spaces (else unchanged)."""
    if any(ch in text for ch in ',:"\n\r') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Inverse of :func:`quote`; text that is not a valid JSON string is returned unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return value
    return text


def build_infotext(prompt: str, negative_prompt: str, params: Mapping) -> str:
    """A1111 infotext. ``params`` order is kept; ``None`` values are left out."""
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        if not _KEY_RE.match(key):
            raise ValueError(f"infotext key {key!r} must be a word followed by words, spaces, '-' or '/'")
        pairs.append(f"{key}: {quote(format_value(value))}")
    parts = [prompt or ""]
    if negative_prompt:
        parts.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    parts.append(", ".join(pairs))
    return "\n".join(parts).strip()


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext into ``(prompt, negative_prompt, params)``; params values stay text.

    Follows A1111: the last line is the parameters line when it holds at least three
    ``Key: value`` pairs; lines are stripped; everything after a line starting with
    ``Negative prompt:`` belongs to the negative prompt.
    """
    lines = (text or "").strip().replace("\r\n", "\n").split("\n")
    last = lines[-1]
    if len(_PARAM_RE.findall(last)) >= _MIN_PARAMS:
        lines = lines[:-1]
    else:
        last = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if not in_negative and line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)

    params: dict[str, str] = {}
    for key, value in _PARAM_RE.findall(last):
        params[key.strip()] = unquote(value.strip())
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def parse_size(value: str) -> tuple[int, int] | None:
    """``"512x768"`` -> ``(512, 768)``; anything else -> None."""
    match = _SIZE_RE.match(value.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _to_int(key: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InvalidRequest(key, f"expected a whole number, got {value!r}") from None


def _to_float(key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise InvalidRequest(key, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidRequest(key, f"expected a finite number, got {value!r}")
    return number


def _sampler(params: Mapping[str, str]) -> str | None:
    """A1111 ≥ 1.9 writes ``Sampler: DPM++ 2M, Schedule type: Karras``; we name that ``DPM++ 2M Karras``.

    Other schedule types have no Visage sampler name and are left out.
    """
    sampler = (params.get("Sampler") or "").strip()
    if not sampler:
        return None
    schedule = (params.get("Schedule type") or "").strip()
    if schedule == "Karras" and not sampler.endswith(" Karras"):
        return f"{sampler} Karras"
    return sampler


def request_from_infotext(text: str) -> dict:
    """Map infotext to GenerationRequest fields; only fields present in the text are returned.

    Keys: prompt, negative_prompt, steps, sampler, cfg_scale, seed, width, height, clip_skip,
    model, preset. Raises ``InvalidRequest`` naming the A1111 key when a number is malformed.
    """
    prompt, negative, params = parse_infotext(text)
    fields: dict = {"prompt": prompt, "negative_prompt": negative}
    if "Steps" in params:
        fields["steps"] = _to_int("Steps", params["Steps"])
    sampler = _sampler(params)
    if sampler:
        fields["sampler"] = sampler
    if "CFG scale" in params:
        fields["cfg_scale"] = _to_float("CFG scale", params["CFG scale"])
    if "Seed" in params:
        fields["seed"] = _to_int("Seed", params["Seed"])
    if "Size" in params:
        size = parse_size(params["Size"])
        if size is None:
            raise InvalidRequest("Size", f"expected WIDTHxHEIGHT, got {params['Size']!r}")
        fields["width"], fields["height"] = size
    if "Clip skip" in params:
        fields["clip_skip"] = _to_int("Clip skip", params["Clip skip"])
    if params.get("Model"):
        fields["model"] = params["Model"]
    if params.get("Preset"):
        fields["preset"] = params["Preset"]
    return fields
