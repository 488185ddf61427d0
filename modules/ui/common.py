"""Small helpers shared by the tabs: errors at the edge, model choices, the status line. Torch-free."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from modules.families import Family, family_info
from modules.ui.i18n import Translator, error_text

#: how often handlers look at a running job
POLL_S = 0.2


def ui_error(t: Translator, exc: BaseException) -> gr.Error:
    """A gr.Error carrying the translated message (raise it from a handler)."""
    return gr.Error(error_text(t, exc), title=t("error.title"), print_exception=False)


def ui_warning(t: Translator, exc: BaseException) -> None:
    gr.Warning(error_text(t, exc), title=t("error.warning_title"))


def ui_info(t: Translator, message: str) -> None:
    gr.Info(message, title=t("info.title"))


def family_label(family: Family | str | None, t: Translator) -> str:
    if not family:
        return t("models.unknown_family")
    try:
        return family_info(family).label
    except ValueError:
        return str(family)


def model_choices(entries) -> list[tuple[str, str]]:
    """Dropdown choices ``(title, name)`` for the loadable models."""
    return [(e.title, e.name) for e in entries if e.supported]


def current_model_name(engine, entries) -> str | None:
    """The registry name of the engine's current model (its status reports a title)."""
    current = engine.status().model
    if not current:
        return None
    for entry in entries:
        if current in (entry.title, entry.name):
            return entry.name
    return None


def status_text(t: Translator, status) -> str:
    model = status.model or t("status.unknown_model")
    if status.state == "loading":
        text = t("status.loading", model=model)
    elif status.state == "ready":
        text = t("status.ready", model=model, family=family_label(status.family, t),
                 device=status.device, dtype=status.dtype)
    elif status.state == "error":
        text = t("status.error", message=status.message)
    elif status.message:
        text = t("status.idle_message", message=status.message)
    else:
        text = t("status.idle")
    if status.queue_length:
        text += t("status.queue", n=status.queue_length)
    return text


def queued_text(t: Translator, engine, job) -> str | None:
    """"Queued: N ahead" while ``job`` waits its turn; None once it runs."""
    position = engine.queue_position(job)
    return t("progress.queued", position=position) if position > 0 else None


def wait_for(job, poll_s: float = POLL_S) -> Iterator[Any]:
    """Yield the job's progress every ``poll_s`` until it has finished."""
    while not job.finished:
        yield job.progress
        time.sleep(poll_s)


def progress_texts(job, text_of, poll_s: float = POLL_S):
    """Yield ``text_of(job)`` each time it changes (checked every ``poll_s``) until ``job`` has finished:
    the progress line of a long job (merge, edge build, face restoration) while the page waits for it."""
    last = None
    while not job.finished:
        text = text_of(job)
        if text != last:
            last = text
            yield text
        time.sleep(poll_s)

