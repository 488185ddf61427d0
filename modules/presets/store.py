"""Presets on disk: one JSON file per preset in one or more folders. Torch-free."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from modules.atomic import atomic_write_json
from modules.errors import InvalidRequest
from modules.families import Family
from modules.messages import Message
from modules.presets.schema import Preset, PresetError, check_id, parse_preset
from modules.styles import apply_style_text

MAX_PRESET_BYTES = 256 * 1024


def apply_preset(preset: Preset, user_prompt: str, family: Family | str, user_negative: str = "") -> dict:
    """Request fields for ``preset`` on ``family``.

    The user's prompt goes into the preset's ``{prompt}`` (or is joined before it with ", ", as
    A1111 styles do); the same for the negative prompt. LoRAs are added as A1111 ``<lora:name:weight>``
    tags. A family the preset has no parameters for gets that family's defaults.
    Keys: prompt, negative_prompt, steps, cfg_scale, width, height, sampler, seed, clip_skip, preset.
    """
    params = preset.params_for(family)
    prompt = apply_style_text(preset.prompt, user_prompt or "")
    if preset.loras:
        tags = " ".join(f"<lora:{lora.name}:{lora.weight:g}>" for lora in preset.loras)
        prompt = f"{prompt} {tags}" if prompt else tags
    return {
        "prompt": prompt,
        "negative_prompt": apply_style_text(preset.negative_prompt, user_negative or ""),
        "steps": params.steps,
        "cfg_scale": params.cfg_scale,
        "width": params.width,
        "height": params.height,
        "sampler": params.sampler,
        "seed": preset.seed,
        "clip_skip": params.clip_skip if params.clip_skip is not None else 1,
        "preset": preset.id,
    }


class PresetStore:
    """All presets found in ``dirs``; a later folder's preset overrides an earlier one with the same id.

    Bad files do not stop the others: their problems are in ``errors``. ``save`` and ``delete``
    act only in ``save_dir`` (default: the last folder).
    """

    def __init__(self, dirs: list[Path], save_dir: Path | None = None):
        if not dirs and save_dir is None:
            raise ValueError("PresetStore needs at least one folder")
        self.dirs = [Path(d) for d in dirs]
        self.save_dir = Path(save_dir) if save_dir is not None else self.dirs[-1]
        self.errors: list[PresetError] = []
        self._presets: dict[str, Preset] = {}
        self._files: dict[str, Path] = {}
        self._lock = threading.RLock()
        self.reload()

    def reload(self) -> None:
        """Read every ``*.json`` again."""
        presets: dict[str, Preset] = {}
        files: dict[str, Path] = {}
        errors: list[PresetError] = []
        for folder in self.dirs:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                try:
                    preset = load_preset_file(path)
                except PresetError as exc:
                    errors.append(exc)
                    continue
                presets[preset.id] = preset
                files[preset.id] = path
        with self._lock:
            self._presets, self._files, self.errors = presets, files, errors

    def list(self) -> list[Preset]:
        """Presets sorted by id."""
        with self._lock:
            return [self._presets[k] for k in sorted(self._presets)]

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._presets)

    def get(self, preset_id: str) -> Preset:
        """The preset, or ``InvalidRequest("preset", ...)`` when there is none with that id."""
        with self._lock:
            preset = self._presets.get(preset_id)
        if preset is None:
            raise InvalidRequest("preset", Message("rule.no_preset", name=preset_id))
        return preset

    def path_of(self, preset_id: str) -> Path:
        with self._lock:
            self.get(preset_id)
            return self._files[preset_id]

    def thumbnail_path(self, preset_id: str) -> Path | None:
        """The preset's thumbnail file when it names one that exists, else None."""
        preset = self.get(preset_id)
        if not preset.thumbnail:
            return None
        path = self.path_of(preset_id).parent / preset.thumbnail
        return path if path.is_file() else None

    def save(self, preset: Preset) -> Path:
        """Validate and write ``save_dir/<id>.json`` atomically; returns the path."""
        check_id(preset.id)
        parse_preset(preset.to_dict(), preset.id, f"{preset.id}.json")  # same checks as loading
        path = self.save_dir / f"{preset.id}.json"
        with self._lock:
            atomic_write_json(path, preset.to_dict())
            self._presets[preset.id] = preset
            self._files[preset.id] = path
        return path

    def delete(self, preset_id: str) -> None:
        """Remove the preset's file from ``save_dir``; an overridden preset from another folder reappears."""
        with self._lock:
            path = self.path_of(preset_id)
            if path.parent.resolve() != self.save_dir.resolve():
                raise InvalidRequest("preset", f"{preset_id!r} is built in and cannot be deleted here")
            path.unlink(missing_ok=True)
        self.reload()

    def apply(self, preset: Preset | str, user_prompt: str, family: Family | str,
              user_negative: str = "") -> dict:
        """:func:`apply_preset` for a preset or a preset id."""
        if isinstance(preset, str):
            preset = self.get(preset)
        return apply_preset(preset, user_prompt, family, user_negative)


def load_preset_file(path: Path) -> Preset:
    """Read and validate one preset file; every problem comes out as ``PresetError``."""
    name = path.name
    try:
        size = path.stat().st_size
        if size > MAX_PRESET_BYTES:
            raise PresetError(name, "(file)", f"is {size} bytes; presets are at most {MAX_PRESET_BYTES}")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PresetError(name, "(file)", f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PresetError(name, "(file)", "is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PresetError(name, "(file)", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_preset(data, path.stem, name)
