"""The translator the tabs receive, and how errors and job notes are said in the page's language. Torch-free.

Tabs never hold literal UI text: they call ``t(key, **fields)``; the tables are data in
:mod:`modules.ui.strings` (the page's English in ``en.py``, Chinese in ``zh.py``).

Errors are framed by their ``VisageError.code`` (keys ``error.<code>``). What they say inside the frame is
translated **by key**: an error, ``InvalidRequest`` rule or job note that is a keyed
:class:`~modules.messages.Message` is rendered from the page's table for its key, with its params (params
that are messages themselves in the same language). Nothing is matched by its English text, so rewording
an English template never loses a translation. Free text (no key) is shown as it is.
"""
from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field

from modules import messages
from modules.errors import Interrupted, InvalidRequest, VisageError
from modules.messages import Message
from modules.ui.strings.en import PAGE_EN
from modules.ui.strings.zh import ZH

LANGUAGES = ("en", "zh")

#: the page in English: its own strings and the keyed messages' English (written once, in modules.messages)
EN: Mapping[str, str] = ChainMap(PAGE_EN, messages.EN)

TABLES: dict[str, Mapping[str, str]] = {"en": EN, "zh": ZH}


def resolve_lang(lang: str | None) -> str:
    """``zh``/``en`` as given; ``auto`` (or None) follows the locale environment, English by default."""
    if lang in LANGUAGES:
        return lang
    if lang not in (None, "", "auto"):
        raise ValueError(f"unknown language {lang!r}; expected one of auto, {', '.join(LANGUAGES)}")
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def lang_from_accept_language(header: str | None) -> str | None:
    """The page language a browser's ``Accept-Language`` asks for: the supported language with the highest
    weight (``zh-CN,zh;q=0.9,en;q=0.8`` -> zh; ``en-US,en;q=0.9,zh;q=0.5`` -> en); None when it names neither."""
    best: tuple[float, int, str] | None = None
    for order, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight <= 0:
            continue
        if best is None or (weight, -order) > (best[0], -best[1]):
            best = (weight, order, primary)
    return best[2] if best else None


def preferred_lang(*, query: str | None, cookie: str | None, accept_language: str | None, default: str,
                   follow_browser: bool) -> str:
    """The language to serve at the page's root.

    An explicit choice wins (``?lang=`` then the ``visage_lang`` cookie the in-page switch leaves); then, with
    ``--lang auto`` (``follow_browser``), Chinese when the browser asks for it; otherwise ``default`` (the
    ``--lang`` flag, or with ``auto`` the system locale's language). So under ``auto``: zh when the browser
    or the system asks for it, else en.
    """
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    if follow_browser and lang_from_accept_language(accept_language) == "zh":
        return "zh"
    return default


@dataclass
class Translator:
    """``t(key, **fields)``: the string for ``key`` in ``lang``, formatted with ``fields``.

    A missing key returns the key itself (so a page still renders) and is recorded in ``missing``;
    with ``strict=True`` it raises ``KeyError`` instead. ``used`` and ``produced`` record what the
    page asked for and what it got, so tests can prove no page string bypassed translation.
    """

    lang: str
    strict: bool = False
    used: set[str] = field(default_factory=set)
    produced: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.lang not in TABLES:
            raise ValueError(f"unknown language {self.lang!r}")

    @property
    def table(self) -> Mapping[str, str]:
        return TABLES[self.lang]

    def has(self, key: str) -> bool:
        return key in self.table

    def __call__(self, key: str, **fields) -> str:
        self.used.add(key)
        template = self.table.get(key)
        if template is None:
            if self.strict:
                raise KeyError(f"no {self.lang} string for {key!r}")
            self.missing.add(key)
            template = key
        text = template.format(**fields) if fields else template
        self.produced.add(text)
        return text

    def message(self, text: Message) -> str:
        """A keyed message in this language: the page's template for its key, else an extension's
        (:func:`modules.messages.add_catalog`), else English (the key is then recorded in ``missing``)."""
        template = self.table.get(text.key)
        if template is None:
            template = messages.catalog(self.lang).get(text.key)
        if template is None:
            self.missing.add(text.key)
            return text.render("en")
        try:
            rendered = messages.format_template(template, text.params, self.lang, translate=self.message)
        except (KeyError, IndexError, ValueError):  # a translation with a wrong placeholder: say the English
            self.missing.add(text.key)
            return str(text)
        self.produced.add(rendered)
        return rendered


def message_text(t: Translator, text: str) -> str:
    """``text`` in ``t``'s language when it is a keyed message (an error rule, a job note); free text as is."""
    return t.message(text) if isinstance(text, Message) else str(text)


def error_text(t: Translator, exc: BaseException) -> str:
    """The user-facing message for ``exc`` in ``t``'s language (never a traceback)."""
    if isinstance(exc, InvalidRequest):
        name = t(f"field.{exc.field}") if t.has(f"field.{exc.field}") else exc.field
        return t("error.invalid_request", field=name, rule=message_text(t, exc.rule))
    if isinstance(exc, Interrupted):
        return t("error.interrupted", step=exc.step, total=exc.total)
    if isinstance(exc, VisageError):
        key = f"error.{exc.code}"
        detail = t.message(exc.message) if exc.message is not None else str(exc)
        return t(key if t.has(key) else "error.error", detail=detail)
    return t("error.unexpected", kind=type(exc).__name__, detail=str(exc))
