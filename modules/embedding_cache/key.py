"""Cache keys for prompt embeddings. Torch-free.

A key names everything that changes the text encoder's output. Two requests with equal keys
must produce bitwise-equal embeddings; anything that could change a bit (model, text-encoder
LoRAs and weights, clip skip, prompt text, family options such as CFG on/off, sequence length,
text-encoder dtype or device) belongs in the key.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modules.errors import InvalidRequest

#: Bumped when the canonical form changes; old files then simply stop matching.
KEY_FORMAT = 1

OptionValue = str | int | float | bool | None


def _check_option_value(name: str, value: object) -> OptionValue:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"options.{name}", "must be a finite number")
        return value
    raise InvalidRequest(f"options.{name}", "must be a str, int, float, bool or None")


def _normalize_options(options: object) -> tuple[tuple[str, OptionValue], ...]:
    items = options.items() if isinstance(options, Mapping) else options
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        raise InvalidRequest("options", "must be a mapping or (name, value) pairs")
    seen: dict[str, OptionValue] = {}
    for pair in items:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InvalidRequest("options", "each option must be a (name, value) pair")
        name, value = pair
        if not isinstance(name, str) or not name:
            raise InvalidRequest("options", "option names must be non-empty strings")
        if name in seen:
            raise InvalidRequest(f"options.{name}", "given twice")
        seen[name] = _check_option_value(name, value)
    return tuple(sorted(seen.items()))


@dataclass(frozen=True)
class CacheKey:
    """Identifies one set of prompt embeddings.

    ``options`` may be given as a mapping or as pairs; it is stored as pairs sorted by name.
    """

    model_hash: str
    text_encoder_state: str
    clip_skip: int
    prompt: str
    negative_prompt: str
    options: tuple[tuple[str, OptionValue], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model_hash, str) or not self.model_hash:
            raise InvalidRequest("model_hash", "must be a non-empty string")
        for name in ("text_encoder_state", "prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequest(name, "must be a string")
        if isinstance(self.clip_skip, bool) or not isinstance(self.clip_skip, int):
            raise InvalidRequest("clip_skip", "must be an integer")
        object.__setattr__(self, "options", _normalize_options(self.options))

    def option(self, name: str, default: OptionValue = None) -> OptionValue:
        return dict(self.options).get(name, default)

    def canonical(self) -> str:
        """A stable JSON text of every field (no Python ``hash()``); the digest is its sha256."""
        return json.dumps(
            {
                "format": KEY_FORMAT,
                "model_hash": self.model_hash,
                "text_encoder_state": self.text_encoder_state,
                "clip_skip": self.clip_skip,
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "options": [[name, value] for name, value in self.options],
            },
            sort_keys=True,
            ensure_ascii=True,
            separators=(",", ":"),
            allow_nan=False,
        )

    def digest(self) -> str:
        """sha256 hex of :meth:`canonical`; used as the file name on disk."""
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()


def text_encoder_state(loras: Iterable[tuple[str, str, float]]) -> str:
    """Canonical text for the LoRAs that touch the text encoder: ``""`` when there are none.

    ``loras`` are ``(name, file_hash, weight)`` in the order they are applied. The order is
    kept: a different order may round differently, so it is a different state.
    """
    parts = []
    for item in loras:
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise InvalidRequest("loras", "each LoRA must be (name, hash, weight)")
        name, file_hash, weight = item
        if not isinstance(name, str) or not isinstance(file_hash, str):
            raise InvalidRequest("loras", "LoRA name and hash must be strings")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise InvalidRequest("loras", f"weight of {name!r} must be a finite number")
        parts.append([name, file_hash, float(weight)])
    if not parts:
        return ""
    return json.dumps(parts, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
