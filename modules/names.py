"""User-supplied names (models, LoRAs, presets, styles, output files) resolve only inside their folders.

Two layers: :func:`check_name` refuses names that look like paths out (``..``, absolute, ``~``, NUL
and other control characters, over-long); the engine's resolvers then accept only registered entries whose
real path (symlinks followed) lies :func:`inside` the real folder they were found in. The page, the API
and the CLI all go through them (``Engine.model``, ``Engine.prepare``). Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modules.errors import UnsafeName
from modules.messages import Message
from modules.paths import MAX_NAME_LENGTH


class UnsafeField(UnsafeName):
    """An unsafe name, with the request field it came from: ``UnsafeField(field, Message("rule.…"))`` (or
    free-form ``rule`` text). ``str(exc)`` is ``"field: rule"``; like ``InvalidRequest``, ``key``/``params``
    are the rule's, and the page says ``"field: rule"`` in its language (``message``)."""

    def __init__(self, field: str, rule: str | Message):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    @property
    def message(self) -> Message | None:
        return Message("rule.field", field=self.field, rule=self.rule) if isinstance(self.rule, Message) else None

    @property
    def key(self) -> str | None:
        return self.rule.key if isinstance(self.rule, Message) else None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.rule.params) if isinstance(self.rule, Message) else {}


def name_problem(name: object) -> Message | None:
    """Why ``name`` is not acceptable as a name (a keyed message, its English the rule), or None when it is."""
    if not isinstance(name, str) or not name.strip():
        return Message("rule.name_empty")
    if len(name) > MAX_NAME_LENGTH:
        return Message("rule.at_most_chars", n=MAX_NAME_LENGTH)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return Message("rule.name_control")
    normalized = name.strip().replace("\\", "/")
    if normalized.startswith(("/", "~")) or os.path.isabs(name) or (len(normalized) > 1 and normalized[1] == ":"):
        return Message("rule.name_absolute")
    if any(part == ".." for part in normalized.split("/")):
        return Message("rule.name_dotdot")
    return None


def check_name(field: str, name: str) -> str:
    """``name`` unchanged, or :class:`UnsafeField` naming ``field``."""
    problem = name_problem(name)
    if problem:
        raise UnsafeField(field, problem)
    return name


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether the real ``path`` lies in (or is) one of the real ``roots``."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    for root in roots:
        try:
            real_root = Path(root).resolve()
        except (OSError, RuntimeError):
            continue
        if real == real_root or real_root in real.parents:
            return True
    return False
