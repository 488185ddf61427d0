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
class PackPanel:
    """Starter packs and single files: pick, see the sizes, download with a byte progress bar."""

    pack: gr.Radio
    repo_or_url: gr.Textbox
    filename: gr.Textbox
    check: gr.Button
    start: gr.Button
    cancel: gr.Button
    plan: gr.Markdown
    progress: gr.HTML
    job_state: gr.State
    download_event: object = None


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
    packs: PackPanel | None = None


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


def progress_html(t: Translator, step: int, total: int, phase: str = "") -> str:
    """An HTML progress bar with ``percent · done / total MB`` (and the file being fetched, when known)."""
    percent = int(100 * step / total) if total else 0
    label = t("models.download_progress", percent=percent, done=f"{step / MB:.1f}", total=f"{total / MB:.1f}")
    if phase.startswith("downloading "):
        label += " · " + phase.removeprefix("downloading ")
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


# -- starter packs and single files ------------------------------------------------------------------

def pack_choices(engine, t: Translator) -> list[tuple[str, str]]:
    labels = []
    for pack in engine.starter_packs():
        label = f"{pack.title(t.lang)} · {pack.hardware(t.lang)}"
        labels.append((label + (" · " + t("models.non_commercial") if pack.non_commercial else ""), pack.id))
    return labels


def plan_title(engine, t: Translator, plan) -> str:
    """A pack's title in the page's language; a single file's or repo's as the plan says it."""
    pack = next((p for p in engine.starter_packs() if p.id == plan.pack_id), None)
    return pack.title(t.lang) if pack is not None else plan.title


def plan_markdown(t: Translator, plan, title: str | None = None) -> str:
    """The plan as a table: what, from where, to where, how big; then the total, what is left and the free disk."""
    rows = [f"| {t('models.col_kind')} | {t('models.col_repo')} | {t('models.col_size')} | "
            f"{t('models.col_destination')} |", "|---|---|---|---|"]
    for item in plan.items:
        d = item.to_dict()
        size = t("models.present") if d["complete"] else (d["size_text"] or "?")
        licence = f" ({escape(d['licence'])})" if d.get("licence") else ""
        rows.append(f"| {t('models.kind_' + d['kind'])} | `{escape(d['repo_id'])}`{licence} | {size} | "
                    f"`{escape(d['destination'])}` |")
    p = plan.to_dict()
    total = t("models.plan_total", total=p["total_text"], missing=p["missing_text"], free=p["free_text"])
    warn = "" if p["fits"] else "\n\n⚠️ " + t("models.plan_no_space")
    return f"**{escape(title or plan.title)}**\n\n" + "\n".join(rows) + f"\n\n{total}{warn}"


def make_plan(engine, t: Translator):
    """Handler: (pack id, repo id or Hub URL, file) -> (plan table, plan). A repo/URL given wins over the pack.
    Nothing is fetched but the Hub's file list and sizes."""

    def plan(pack_id, repo_or_url, filename):
        repo_or_url, filename = (repo_or_url or "").strip(), (filename or "").strip()
        try:
            if repo_or_url.startswith(("http://", "https://")):
                result = engine.plan_download(url=repo_or_url)
            elif repo_or_url:
                result = engine.plan_download(repo_id=repo_or_url, filename=filename or None)
            else:
                result = engine.plan_download(pack=pack_id)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        return plan_markdown(t, result, plan_title(engine, t, result)), result

    return plan


def make_pack_download(engine, t: Translator, poll_s: float = POLL_S):
    """Handler: (pack, repo/URL, file) -> yields (plan table, progress bar, job) until the download ends.
    The plan is made again first (fresh sizes and what is already here), and shown before the first byte."""
    planner = make_plan(engine, t)

    def download(pack_id, repo_or_url, filename):
        table, plan = planner(pack_id, repo_or_url, filename)
        try:
            job = engine.download(plan)
        except VisageError as exc:
            raise ui_error(t, exc) from None
        yield table, escape(t("models.download_waiting")), job
        last = None
        while not job.finished:
            p = job.progress
            html = progress_html(t, p.step, p.total, p.phase) if p.total else escape(t("models.download_waiting"))
            if html != last:
                last = html
                yield gr.skip(), html, gr.skip()
            time.sleep(poll_s)
        try:
            job.wait(0)
        except Exception as exc:  # noqa: BLE001 - the job already logged it; a message, never a traceback
            raise ui_error(t, exc) from None
        yield gr.skip(), escape(t("models.pack_done", title=plan_title(engine, t, plan))), None

    return download


def cancel_download(job) -> None:
    """Stop the running download between chunks; its part files stay, so starting again resumes."""
    if job is not None:
        job.cancel()


def build_packs(engine, t: Translator) -> PackPanel:
    gr.Markdown(t("models.packs_intro"))
    choices = pack_choices(engine, t)
    pack = gr.Radio(choices, value=choices[0][1] if choices else None, label=t("models.packs"),
                    elem_id="models_packs")
    with gr.Row():
        repo_or_url = gr.Textbox(label=t("models.repo_or_url"), placeholder=t("models.repo_or_url_placeholder"),
                                 scale=3)
        filename = gr.Textbox(label=t("models.file"), placeholder=t("models.file_placeholder"), scale=2)
    with gr.Row():
        check = gr.Button(t("models.check_sizes"), scale=0, min_width=140)
        start = gr.Button(t("models.download_pack"), variant="primary", scale=0, min_width=140)
        cancel = gr.Button(t("models.cancel"), variant="stop", scale=0, min_width=100)
    plan = gr.Markdown("", elem_id="models_plan")
    progress = gr.HTML("", elem_id="models_pack_progress")
    panel = PackPanel(pack, repo_or_url, filename, check, start, cancel, plan, progress, gr.State(None))
    inputs = [pack, repo_or_url, filename]
    planner = make_plan(engine, t)
    check.click(lambda *args: planner(*args)[0], inputs, plan, api_name="plan_download")
    panel.download_event = start.click(make_pack_download(engine, t), inputs,
                                       [plan, progress, panel.job_state], api_name="download_pack",
                                       concurrency_limit=None)
    cancel.click(cancel_download, panel.job_state, None, api_visibility="private", queue=False)
    return panel


def build(engine, t: Translator) -> ModelsTab:
    entries = engine.models()
    packs = build_packs(engine, t)
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
    packs.download_event = packs.download_event.success(make_refresh(engine, t), None, [summary, table],
                                                        api_visibility="private")
    return ModelsTab(summary, table, refresh, suggested, repo_id, download, download_progress,
                     refresh_event, download_event, packs)
