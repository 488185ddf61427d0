"""A1111 ``styles.csv``: named prompt/negative-prompt snippets applied on top of a prompt. Torch-free.

File format (A1111's): UTF-8 (a BOM is accepted and written), header ``name,prompt,negative_prompt``
(the legacy ``name,text`` is read too), rows whose name starts with ``#`` are skipped.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modules.atomic import atomic_write_text
from modules.errors import InvalidRequest
from modules.messages import Message

FIELDS = ("name", "prompt", "negative_prompt")
PROMPT_PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def load_styles(path: str | os.PathLike) -> dict[str, Style]:
    """Styles by name, in file order. A missing or empty file gives ``{}``; a repeated name keeps the last."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    return parse_styles(text, source=path.name)


def parse_styles(text: str, source: str = "styles.csv") -> dict[str, Style]:
    """Parse the contents of a styles.csv (see :func:`load_styles`); bad CSV raises ``InvalidRequest``."""
    styles: dict[str, Style] = {}
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""), skipinitialspace=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InvalidRequest(source, Message("rule.csv_line", line=reader.line_num, problem=str(exc))) from None
    for row in rows:
        name = (row.get("name") or "").strip()
        if not name or name.startswith("#"):
            continue
        prompt = row.get("prompt")
        if prompt is None:
            prompt = row.get("text")
        styles[name] = Style(name, prompt or "", row.get("negative_prompt") or "")
    return styles


def format_styles(styles: Mapping[str, Style] | Iterable[Style]) -> str:
    """CSV text as A1111 writes it: header, ``QUOTE_MINIMAL``, ``\\r\\n`` line ends (no BOM here)."""
    items = styles.values() if isinstance(styles, Mapping) else styles
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(FIELDS), quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    for style in items:
        writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
    return buffer.getvalue()


def save_styles(path: str | os.PathLike, styles: Mapping[str, Style] | Iterable[Style]) -> Path:
    """Write styles atomically, UTF-8 with BOM (``utf-8-sig``) as A1111 does."""
    return atomic_write_text(path, format_styles(styles), encoding="utf-8-sig")


def apply_style_text(style_text: str, prompt: str) -> str:
    """Put ``prompt`` into ``style_text``: replace every ``{prompt}``, else join ``prompt, style_text``.

    Without a placeholder both sides are stripped and an empty side adds no comma.
    """
    if PROMPT_PLACEHOLDER in style_text:
        return style_text.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Iterable[Style]) -> tuple[str, str]:
    """Apply several styles in order to both the prompt and the negative prompt."""
    for style in styles:
        prompt = apply_style_text(style.prompt, prompt)
        negative_prompt = apply_style_text(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
