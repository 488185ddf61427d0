"""The Models tab: what the registry found, suggested models, and downloads. Torch-free."""
from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape

import gradio as gr

from modules.errors import VisageError
from modules.ui.common import POLL_S, family_label, ui_error
from modules.ui.i18n import Translator

MB = 1024 * 1024


@dataclass
class ModelsTab:
    summary: gr.Markdown
    table: gr.Dataframe
    refresh: gr.Button
    suggested: gr.Dataframe
    repo_id: gr.Textbox
    download: gr.Button
    download_progress: gr.HTML
    #: events the page chains a model-list refresh onto
    refresh_event: object
    download_event: object


def model_rows(t: Translator, entries) -> list[list[str]]:
    return [
        [e.name, family_label(e.family, t), str(e.format), e.hash or "",
         t("models.ok") if e.supported else t("models.unsupported", reason=e.reason)]
        for e in entries
    ]


def summary_text(t: Translator, entries) -> str:
    return t("models.count", count=len(entries), supported=sum(1 for e in entries if e.supported))


def suggested_rows(t: Translator, suggestions: list[dict]) -> list[list[str]]:
    return [[s.get("repo_id", ""), family_label(s.get("family"), t), s.get("note", "")] for s in suggestions]


def progress_html(t: Translator, step: int, total: int) -> str:
    """An HTML progress bar with ``percent · done / total MB``."""
    percent = int(100 * step / total) if total else 0
    label = t("models.download_progress", percent=percent, done=f"{step / MB:.1f}", total=f"{total / MB:.1f}")
    return (f'<progress value="{percent}" max="100" style="width:100%"></progress>'
            f"<div>{escape(label)}</div>")


def make_refresh(engine, t: Translator):
    def refresh():
        try:
            entries = engine.models(refresh=True)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        return summary_text(t, entries), model_rows(t, entries)
    return refresh


def make_download(engine, t: Translator, poll_s: float = POLL_S):
    """Handler: repo id -> yields an HTML progress bar until the download job ends."""

    def download(repo_id: str):
        repo_id = (repo_id or "").strip()
        try:
            job = engine.download_model(repo_id)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        last = None
        while not job.finished:
            p = job.progress
            html = progress_html(t, p.step, p.total) if p.total else escape(t("models.download_waiting"))
            if html != last:
                last = html
                yield html
            time.sleep(poll_s)
        try:
            path = job.wait(0)
        except Exception as exc:  # noqa: BLE001 - the job already logged it; a message, never a traceback
            raise ui_error(t, exc) from None
        yield escape(t("models.download_done", repo=repo_id, path=str(path)))

    return download


def build(engine, t: Translator) -> ModelsTab:
    entries = engine.models()
    summary = gr.Markdown(summary_text(t, entries))
    with gr.Row():
        refresh = gr.Button(t("models.refresh"), scale=0, min_width=120)
    table = gr.Dataframe(
        headers=[t("models.col_name"), t("models.col_family"), t("models.col_format"),
                 t("models.col_hash"), t("models.col_status")],
        value=model_rows(t, entries), label=t("models.found"), interactive=False, wrap=True,
        column_count=5,
    )
    suggested = gr.Dataframe(
        headers=[t("models.col_repo"), t("models.col_family"), t("models.col_note")],
        value=suggested_rows(t, engine.suggested_models()), label=t("models.suggested"),
        interactive=False, wrap=True, column_count=3,
    )
    with gr.Row():
        repo_id = gr.Textbox(label=t("models.repo_id"), placeholder=t("models.repo_placeholder"), scale=4)
        download = gr.Button(t("models.download"), variant="primary", scale=1)
    download_progress = gr.HTML("")

    refresh_event = refresh.click(make_refresh(engine, t), None, [summary, table], api_name="refresh_models")

    def pick(evt: gr.SelectData):
        row = evt.row_value or []
        return row[0] if row else gr.skip()

    suggested.select(pick, None, repo_id, api_visibility="private", queue=False)
    download_event = download.click(make_download(engine, t), repo_id, download_progress,
                                    api_name="download_model", concurrency_limit=None)
    download_event = download_event.success(make_refresh(engine, t), None, [summary, table],
                                            api_visibility="private")
    return ModelsTab(summary, table, refresh, suggested, repo_id, download, download_progress,
                     refresh_event, download_event)
