"""Options set through ``/sdapi/v1/options``, kept in ``config.json`` (A1111's file and key names). Torch-free.

Only a few keys mean something to Visage (:data:`DEFAULTS`); each is validated when the file is read,
and a bad value falls back to its default with a warning. Keys Visage does not know are kept in the
file untouched (it may be an A1111 install's own config.json) but never applied. Writes are atomic.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modules.atomic import atomic_write_json
from modules.errors import InvalidRequest

log = logging.getLogger(__name__)


def _clip_skip(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
        raise ValueError("must be a whole number from 1 to 12")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _preview_steps(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= 150:
        raise ValueError("must be a whole number from -1 to 150")
    return value


#: key -> (default, validator returning the clean value or raising ValueError)
OPTIONS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "CLIP_stop_at_last_layers": (1, _clip_skip),  # clip skip for /sdapi/v1/txt2img requests
    "samples_save": (True, _boolean),  # False: /sdapi/v1/txt2img never writes files, even with save_images
    "live_previews_enable": (True, _boolean),  # TAESD previews for /sdapi/v1/progress
    "show_progress_every_n_steps": (10, _preview_steps),  # how often (0 or -1: no live preview)
}
DEFAULTS = {key: default for key, (default, _check) in OPTIONS.items()}


class OptionsStore:
    """The known options, read once from ``path`` and written back atomically on change."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._values = dict(DEFAULTS)
        self._other: dict[str, Any] = {}  # keys of the file Visage does not use, written back as found
        self.warnings: list[str] = []
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self._warn(f"{self.path.name} is unreadable ({type(exc).__name__}); using defaults")
            return
        if not isinstance(data, dict):
            self._warn(f"{self.path.name} is not a JSON object; using defaults")
            return
        for key, value in data.items():
            if key not in OPTIONS:
                self._other[key] = value
                continue
            default, check = OPTIONS[key]
            try:
                self._values[key] = check(value)
            except ValueError as exc:
                self._warn(f"{self.path.name}: {key} {exc} (got {value!r}); using the default {default!r}")

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._values[key]

    def values(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def update(self, changes: Mapping[str, Any]) -> list[str]:
        """Apply and save the known keys of ``changes``; returns the keys that were ignored.

        A bad value raises ``InvalidRequest`` naming the key, and nothing is changed."""
        clean, ignored = {}, []
        for key, value in changes.items():
            if key not in OPTIONS:
                ignored.append(key)
                continue
            try:
                clean[key] = OPTIONS[key][1](value)
            except ValueError as exc:
                raise InvalidRequest(key, str(exc)) from None
        if clean:
            with self._lock:
                self._values.update(clean)
                if self.path is not None:
                    atomic_write_json(self.path, {**self._other, **self._values})
        return ignored
