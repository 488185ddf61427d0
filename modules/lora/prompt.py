"""``<lora:NAME:WEIGHT>`` tags in prompts, with A1111's semantics. Torch-free.

Accepted (``lyco`` is an alias of ``lora``; the tag word is case-insensitive):

* ``<lora:name>``: weight 1.0 for both the text encoder and the U-Net/DiT
* ``<lora:name:w>``: weight ``w`` for both
* ``<lora:name:w_te:w_unet>``: separate weights (A1111's positional order: text encoder first)
* ``<lora:name:te=0.5:unet=0.8>`` and mixtures (``<lora:name:0.5:unet=1>``); ``dyn=``/a third number
  (A1111's dynamic rank) is accepted and ignored

A tag with an empty name (``<lora:>``, ``<lora: :1>``) is not a LoRA tag and stays in the text; a tag
with a name but an unreadable weight raises ``InvalidRequest`` so that a typo never goes unnoticed.
Other ``<...>`` tags stay as they are. Where tags are removed, the commas and spaces around them are
merged so that ``"a photo, <lora:x:1>, smiling"`` becomes ``"a photo, smiling"``; the rest of the
prompt is left untouched.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modules.errors import InvalidRequest
from modules.messages import Message

_TAG = re.compile(r"<(lora|lyco):([^<>]*)>", re.IGNORECASE)
_GAP_CHARS = " \t\r\n,，、"
_MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class PromptLora:
    """One LoRA requested by a prompt tag."""

    name: str
    unet_weight: float = 1.0
    te_weight: float = 1.0

    @property
    def weight(self) -> float:
        """The U-Net/DiT weight (what ``<lora:name:w>`` sets)."""
        return self.unet_weight


def _weight(raw: str, tag: str) -> float:
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest("prompt", Message("rule.lora_weight_nan", tag=tag, text=text)) from None
    if not math.isfinite(value) or abs(value) > _MAX_WEIGHT:
        raise InvalidRequest("prompt", Message("rule.lora_weight_range", tag=tag, text=text))
    return value


def _parse_tag(body: str, tag: str) -> PromptLora | None:
    items = body.split(":")
    name = items[0].strip()
    if not name:
        return None
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items[1:]:
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key not in ("te", "unet", "dyn"):
                raise InvalidRequest("prompt", Message("rule.lora_option", tag=tag, key=key))
            named[key] = value
        else:
            positional.append(item)
    if len(positional) > 3:
        raise InvalidRequest("prompt", Message("rule.lora_values", tag=tag))
    te = _weight(positional[0], tag) if positional else 1.0
    if "te" in named:
        te = _weight(named["te"], tag)
    unet = _weight(positional[1], tag) if len(positional) > 1 else te
    if "unet" in named:
        unet = _weight(named["unet"], tag)
    dyn = named.get("dyn", positional[2] if len(positional) > 2 else None)
    if dyn is not None and not dyn.strip().isdigit():
        raise InvalidRequest("prompt", Message("rule.lora_dyn", tag=tag, dyn=dyn.strip()))
    return PromptLora(name=name, unet_weight=unet, te_weight=te)


def _sentinel(prompt: str) -> str:
    for code in range(0xE000, 0xF8FF):
        ch = chr(code)
        if ch not in prompt:
            return ch
    raise InvalidRequest("prompt", "contains every private-use character")  # pragma: no cover


def _tidy(pieces: list[str]) -> str:
    """Join the text between removed tags, merging the separators around each gap."""
    mark = _sentinel("".join(pieces))
    text = mark.join(pieces)
    gap_class = re.escape(_GAP_CHARS)
    gap_re = re.compile(f"[{gap_class}]*{re.escape(mark)}(?:[{gap_class}]*{re.escape(mark)})*[{gap_class}]*")

    def repl(m: re.Match) -> str:
        if m.start() == 0 or m.end() == len(text):
            return ""
        gap = m.group(0).replace(mark, "")
        for sep, out in ((",", ", "), ("，", "，"), ("、", "、"), ("\n", "\n")):
            if sep in gap:
                return out
        if gap:
            return " "
        left, right = text[m.start() - 1], text[m.end()]
        wordy = (left.isascii() and left.isalnum()) and (right.isascii() and right.isalnum())
        return " " if wordy else ""

    return gap_re.sub(repl, text)


def parse_prompt_loras(prompt: str) -> tuple[str, list[PromptLora]]:
    """Remove LoRA tags from ``prompt``; return the clean prompt and the LoRAs in order of appearance.

    The same name may appear more than once; callers decide (the patcher adds the weights up).
    """
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt", Message("rule.text"))
    pieces: list[str] = []
    found: list[PromptLora] = []
    last = 0
    for m in _TAG.finditer(prompt):
        parsed = _parse_tag(m.group(2), m.group(0))
        if parsed is None:
            continue
        pieces.append(prompt[last:m.start()])
        found.append(parsed)
        last = m.end()
    if not found:
        return prompt, []
    pieces.append(prompt[last:])
    return _tidy(pieces), found


def format_lora_tag(name: str, unet_weight: float = 1.0, te_weight: float | None = None) -> str:
    """The tag that :func:`parse_prompt_loras` reads back as the same request."""
    def num(w: float) -> str:
        return f"{w:g}"

    if te_weight is None or te_weight == unet_weight:
        return f"<lora:{name}:{num(unet_weight)}>"
    return f"<lora:{name}:{num(te_weight)}:{num(unet_weight)}>"
