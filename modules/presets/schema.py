"""Preset data and its validation (schema documented in ``presets/README.md``). Torch-free."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from modules.errors import InvalidRequest
from modules.families import Family, family_info
from modules.generation.params import MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS
from modules.messages import Message

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
THUMBNAIL_RE = re.compile(r"^[\w\- .]+\.(png|jpg|jpeg|webp)$", re.IGNORECASE)
RANDOM_SEED = "random"
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1000
MAX_LORAS = 8
MAX_TAGS = 20

TOP_LEVEL_FIELDS = (
    "id", "name", "description", "prompt", "negative_prompt", "family_params", "seed",
    "families", "loras", "thumbnail", "tags",
)
FAMILY_PARAM_FIELDS = ("steps", "cfg_scale", "width", "height", "sampler", "clip_skip")


class PresetError(InvalidRequest):
    """One problem with one preset: which file, which field (dotted path), what is wrong."""

    code = "invalid_preset"

    def __init__(self, file: str, field: str, problem: str):
        super().__init__(field, problem)
        self.file = file
        self.problem = problem
        self.args = (f"{file}: {field}: {problem}" if file else f"{field}: {problem}",)


@dataclass(frozen=True)
class LocalizedText:
    zh: str
    en: str

    def get(self, lang: str) -> str:
        """Text in ``lang`` ("zh" or "en"), falling back to the other language when empty."""
        first, second = (self.zh, self.en) if lang.startswith("zh") else (self.en, self.zh)
        return first or second


@dataclass(frozen=True)
class FamilyParams:
    steps: int
    cfg_scale: float
    width: int
    height: int
    sampler: str
    clip_skip: int | None = None  # None: the request default (1)


@dataclass(frozen=True)
class LoraRef:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Preset:
    id: str
    name: LocalizedText
    families: tuple[Family, ...]  # suited families, best first
    family_params: dict[Family, FamilyParams]
    prompt: str = "{prompt}"
    negative_prompt: str = ""
    description: LocalizedText = LocalizedText("", "")
    seed: int = -1  # -1: random
    loras: tuple[LoraRef, ...] = ()
    thumbnail: str | None = None  # file name next to the JSON file
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def best_family(self) -> Family:
        return self.families[0]

    def params_for(self, family: Family | str) -> FamilyParams:
        """This preset's parameters for ``family``, or that family's defaults when it has none."""
        family = Family(family)
        if family in self.family_params:
            return self.family_params[family]
        info = family_info(family)
        return FamilyParams(info.steps, info.cfg, info.width, info.height, info.default_sampler)

    def to_dict(self) -> dict:
        """The JSON form (inverse of :func:`parse_preset`)."""
        data: dict[str, Any] = {
            "id": self.id,
            "name": {"zh": self.name.zh, "en": self.name.en},
            "description": {"zh": self.description.zh, "en": self.description.en},
            "families": [f.value for f in self.families],
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "family_params": {},
            "seed": RANDOM_SEED if self.seed == -1 else self.seed,
        }
        for family, params in self.family_params.items():
            entry = {"steps": params.steps, "cfg_scale": params.cfg_scale, "width": params.width,
                     "height": params.height, "sampler": params.sampler}
            if params.clip_skip is not None:
                entry["clip_skip"] = params.clip_skip
            data["family_params"][family.value] = entry
        if self.loras:
            data["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in self.loras]
        if self.thumbnail:
            data["thumbnail"] = self.thumbnail
        if self.tags:
            data["tags"] = list(self.tags)
        return data


class _Reader:
    """Field accessors that raise ``PresetError`` naming the file and the field path."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, field_path: str, problem: str) -> PresetError:
        return PresetError(self.file, field_path, problem)

    def text(self, value: Any, field_path: str, max_chars: int, required: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(field_path, _got(Message("rule.text"), _kind(value)))
        if required and not value.strip():
            raise self.fail(field_path, Message("rule.not_empty"))
        if len(value) > max_chars:
            raise self.fail(field_path, Message("rule.at_most_chars", n=max_chars))
        if "\x00" in value:
            raise self.fail(field_path, Message("rule.no_nul"))
        return value

    def integer(self, value: Any, field_path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field_path, _got(Message("rule.whole"), _kind(value)))
        if not low <= value <= high:
            raise self.fail(field_path, _got(Message("rule.between", low=low, high=high), value))
        return value

    def number(self, value: Any, field_path: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(field_path, _got(Message("rule.number"), _kind(value)))
        if not low <= value <= high:
            raise self.fail(field_path, _got(Message("rule.between", low=f"{low:g}", high=f"{high:g}"), value))
        return float(value)

    def localized(self, value: Any, field_path: str, max_chars: int, required: bool) -> LocalizedText:
        if value is None and not required:
            return LocalizedText("", "")
        if not isinstance(value, dict):
            shape = Message("rule.object_shaped", shape='{"zh": ..., "en": ...}')
            raise self.fail(field_path, _got(shape, _kind(value)))
        extra = sorted(set(value) - {"zh", "en"})
        if extra:
            raise self.fail(f"{field_path}.{extra[0]}", Message("rule.unknown_language"))
        zh = self.text(value.get("zh", ""), f"{field_path}.zh", max_chars, required=required)
        en = self.text(value.get("en", ""), f"{field_path}.en", max_chars, required=required)
        return LocalizedText(zh, en)

    def family(self, value: Any, field_path: str) -> Family:
        try:
            return Family(value)
        except ValueError:
            known = ", ".join(f.value for f in Family)
            raise self.fail(field_path, Message("rule.unknown_family", value=value, known=known)) from None

    def family_params(self, value: Any, family: Family, field_path: str) -> FamilyParams:
        info = family_info(family)
        if not isinstance(value, dict):
            raise self.fail(field_path, _got(Message("rule.object"), _kind(value)))
        extra = sorted(set(value) - set(FAMILY_PARAM_FIELDS))
        if extra:
            raise self.fail(f"{field_path}.{extra[0]}", Message("rule.unknown_field"))
        for name in ("steps", "cfg_scale", "width", "height", "sampler"):
            if name not in value:
                raise self.fail(f"{field_path}.{name}", Message("rule.required"))
        steps = self.integer(value["steps"], f"{field_path}.steps", 1, MAX_STEPS)
        cfg = self.number(value["cfg_scale"], f"{field_path}.cfg_scale", 0.0, 30.0)
        sizes = []
        for name in ("width", "height"):
            side = self.integer(value[name], f"{field_path}.{name}", info.min_side, info.max_side)
            if side % 8:
                raise self.fail(f"{field_path}.{name}", _got(Message("rule.multiple", n=8), side))
            sizes.append(side)
        sampler = value["sampler"]
        if sampler not in info.samplers:
            raise self.fail(f"{field_path}.sampler", Message("rule.not_sampler", sampler=sampler, family=info.label,
                                                             choices=", ".join(info.samplers)))
        clip_skip = value.get("clip_skip")
        if clip_skip is not None:
            if not info.supports_clip_skip:
                raise self.fail(f"{field_path}.clip_skip", Message("rule.no_clip_skip", family=info.label))
            clip_skip = self.integer(clip_skip, f"{field_path}.clip_skip", 1, 12)
        return FamilyParams(steps, cfg, sizes[0], sizes[1], sampler, clip_skip)


def _kind(value: Any) -> str:
    if value is None:
        return Message("kind.null")
    if isinstance(value, bool):
        return Message("kind.bool")
    if isinstance(value, str):
        return Message("kind.text", text=value[:40])
    if isinstance(value, (int, float)):
        return Message("kind.number", value=value)
    if isinstance(value, list):
        return Message("kind.list")
    if isinstance(value, dict):
        return Message("kind.object")
    return type(value).__name__


def _got(rule: Message, value: Any) -> Message:
    """``rule`` and what was found instead: "must be a number, got a list"."""
    return Message("rule.got", rule=rule, value=value)


def check_id(preset_id: str, file: str = "") -> str:
    """Raise ``PresetError`` unless ``preset_id`` is 1-64 of ``a-z 0-9 _ -`` starting with a letter or digit."""
    if not isinstance(preset_id, str) or not ID_RE.match(preset_id):
        raise PresetError(file, "id", Message("rule.preset_id", id=preset_id))
    return preset_id


def parse_preset(data: Any, preset_id: str | None = None, file: str = "") -> Preset:
    """Validate the JSON form of a preset and build it; raises ``PresetError`` for the first problem.

    ``preset_id`` is the file stem; a JSON ``id`` field, when present, must equal it. Keys starting
    with ``_`` (comments) are ignored; other unknown keys are errors (they are usually typos).
    """
    r = _Reader(file)
    if not isinstance(data, dict):
        raise r.fail("(top level)", _got(Message("rule.json_object"), _kind(data)))
    extra = sorted(k for k in data if k not in TOP_LEVEL_FIELDS and not str(k).startswith("_"))
    if extra:
        raise r.fail(extra[0], Message("rule.unknown_field_known", known=", ".join(TOP_LEVEL_FIELDS)))
    preset_id = _read_id(r, data, preset_id, file)
    for name in ("name", "families", "family_params"):
        if name not in data:
            raise r.fail(name, Message("rule.required"))
    name = r.localized(data["name"], "name", MAX_NAME_CHARS, required=True)
    description = r.localized(data.get("description"), "description", MAX_DESCRIPTION_CHARS, required=False)
    prompt = r.text(data.get("prompt", "{prompt}"), "prompt", MAX_PROMPT_CHARS)
    negative = r.text(data.get("negative_prompt", ""), "negative_prompt", MAX_PROMPT_CHARS)
    families, family_params = _read_families(r, data)
    seed, loras = _read_seed(r, data), _read_loras(r, data)
    thumbnail = data.get("thumbnail")
    if thumbnail is not None:
        if not isinstance(thumbnail, str) or not THUMBNAIL_RE.match(thumbnail) or thumbnail.startswith("."):
            raise r.fail("thumbnail", Message("rule.thumbnail"))
    raw_tags = data.get("tags", [])
    if not isinstance(raw_tags, list) or len(raw_tags) > MAX_TAGS:
        raise r.fail("tags", Message("rule.tags", n=MAX_TAGS))
    return Preset(
        id=preset_id, name=name, description=description, prompt=prompt, negative_prompt=negative,
        families=tuple(families), family_params=family_params, seed=seed, loras=tuple(loras), thumbnail=thumbnail,
        tags=tuple(r.text(tag, f"tags[{i}]", 40, required=True) for i, tag in enumerate(raw_tags)),
    )


def _read_id(r: "_Reader", data: dict, preset_id: str | None, file: str) -> str:
    json_id = data.get("id")
    if preset_id is None:
        if json_id is None:
            raise r.fail("id", Message("rule.required"))
        preset_id = json_id
    check_id(preset_id, file)
    if json_id is not None and json_id != preset_id:
        raise r.fail("id", Message("rule.id_mismatch", id=json_id, file=preset_id))
    return preset_id


def _read_families(r: "_Reader", data: dict) -> tuple[list[Family], dict[Family, FamilyParams]]:
    raw_families = data["families"]
    if not isinstance(raw_families, list) or not raw_families:
        raise r.fail("families", Message("rule.families_list"))
    families: list[Family] = []
    for i, value in enumerate(raw_families):
        family = r.family(value, f"families[{i}]")
        if family in families:
            raise r.fail(f"families[{i}]", Message("rule.listed_twice", value=family.value))
        families.append(family)

    raw_params = data["family_params"]
    if not isinstance(raw_params, dict):
        raise r.fail("family_params", _got(Message("rule.object_by_family"), _kind(raw_params)))
    family_params: dict[Family, FamilyParams] = {}
    for key, value in raw_params.items():
        family = r.family(key, f"family_params.{key}")
        family_params[family] = r.family_params(value, family, f"family_params.{key}")
    for family in families:
        if family not in family_params:
            raise r.fail(f"family_params.{family.value}", Message("rule.required_per_family"))
    return families, family_params


def _read_seed(r: "_Reader", data: dict) -> int:
    seed = data.get("seed", RANDOM_SEED)
    if seed == RANDOM_SEED or seed == -1:
        return -1
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise r.fail("seed", _got(Message("rule.seed_value"), _kind(seed)))
    return r.integer(seed, "seed", 0, MAX_SEED)


def _read_loras(r: "_Reader", data: dict) -> list[LoraRef]:
    loras = []
    raw_loras = data.get("loras", [])
    if not isinstance(raw_loras, list) or len(raw_loras) > MAX_LORAS:
        raise r.fail("loras", Message("rule.preset_loras", n=MAX_LORAS))
    for i, item in enumerate(raw_loras):
        path = f"loras[{i}]"
        if not isinstance(item, dict):
            shape = Message("rule.object_shaped", shape='{"name": ..., "weight": ...}')
            raise r.fail(path, _got(shape, _kind(item)))
        extra = sorted(set(item) - {"name", "weight"})
        if extra:
            raise r.fail(f"{path}.{extra[0]}", Message("rule.unknown_field"))
        lora_name = r.text(item.get("name"), f"{path}.name", 200, required=True)
        if any(ch in lora_name for ch in "<>:"):
            raise r.fail(f"{path}.name", Message("rule.lora_name_chars"))
        weight = r.number(item.get("weight", 1.0), f"{path}.weight", -10.0, 10.0)
        loras.append(LoraRef(lora_name, weight))
    return loras
