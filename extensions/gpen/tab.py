"""The "Restore faces" page tab: upload a photo, get it back with the faces restored. Torch-free.

The work is a job on the engine's queue (``ctx.submit``), so it waits its turn behind generations and
never runs on Gradio's threads; the handler only polls the job and shows its progress. Strings are the
extension's own (:mod:`.strings`), in the page's language.
"""
from __future__ import annotations

from .restore import FaceRestorer, RestoreOptions
from .strings import say, text
from .variants import VARIANTS

POLL_S = 0.2


_PHASES = ("loading", "detecting", "restoring")


def progress_line(lang: str, progress) -> str:
    if progress.phase == "queued":
        return text("queued", lang)
    phase = text(f"phase.{progress.phase}", lang) if progress.phase in _PHASES else progress.phase
    if progress.total:
        return text("progress", lang, phase=phase, step=progress.step, total=progress.total)
    return phase


def make_restore(restorer: FaceRestorer, defaults: RestoreOptions, submit, lang: str, errors, poll_s: float = POLL_S):
    """The handler: ``(image, model, max_side, tile, upscale, strength, fp16)`` -> yields
    ``(status text, image or skip)`` while the job runs, then the restored image.
    ``errors(exc)`` turns an exception into the page's error (a gr.Error)."""
    import gradio as gr

    from modules.errors import Interrupted, VisageError
    from modules.ui.common import progress_texts

    def restore(image, model=None, max_side=None, tile=None, upscale=None, strength=None, fp16=None):
        if image is None:
            raise gr.Error(text("no_image", lang))
        values = {"model": model, "max_side": _int(max_side), "tile": _int(tile), "upscale": _int(upscale),
                  "strength": strength, "fp16": fp16}
        try:
            options = RestoreOptions.from_mapping(values, defaults)
            restorer.check_ready(options)
            job = submit("restore-faces", lambda ctx: restorer.restore(
                image, options, report=ctx.report, cancelled=lambda: ctx.cancelled))
        except VisageError as exc:
            raise errors(exc) from None
        for line in progress_texts(job, lambda j: progress_line(lang, j.progress), poll_s):
            yield line, gr.skip()
        try:
            result = job.wait(0)
        except Interrupted as exc:
            yield str(exc), None
            return
        except Exception as exc:  # noqa: BLE001 - the job logged it; the page shows a message, not a traceback
            raise errors(exc) from None
        done = text("done", lang, n=len(result.faces), model=result.model, device=result.device,
                    dtype=result.dtype, seconds=result.seconds)
        yield "\n\n".join([done, *(say(note, lang) for note in result.notes)]), result.image

    return restore


def _int(value):
    return None if value is None else int(value)


def make_build(restorer: FaceRestorer, defaults: RestoreOptions):
    def build(ctx) -> None:
        import gradio as gr

        lang = ctx.lang

        def errors(exc):
            from modules.ui.common import ui_error
            return ui_error(ctx.t, exc)

        gr.Markdown(text("intro", lang))
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label=text("input", lang), elem_id="gpen_input")
                model = gr.Dropdown(list(VARIANTS), value=defaults.model, label=text("model", lang))
                with gr.Row():
                    max_side = gr.Number(defaults.max_side, precision=0, minimum=0, label=text("max_side", lang))
                    tile = gr.Number(defaults.tile, precision=0, minimum=0, label=text("tile", lang))
                with gr.Row():
                    upscale = gr.Slider(1, 4, value=defaults.upscale, step=1, label=text("upscale", lang))
                    strength = gr.Slider(0.0, 1.0, value=defaults.strength, step=0.05, label=text("strength", lang))
                fp16 = gr.Checkbox(defaults.fp16, label=text("fp16", lang))
                run = gr.Button(text("run", lang), variant="primary", elem_id="gpen_run")
            with gr.Column():
                output = gr.Image(type="pil", label=text("output", lang), elem_id="gpen_output",
                                  format="png", interactive=False)
                status = gr.Markdown("", elem_id="gpen_status")
        run.click(make_restore(restorer, defaults, ctx.submit, lang, errors),
                  [image, model, max_side, tile, upscale, strength, fp16], [status, output],
                  api_name="restore_faces", show_progress="minimal", concurrency_limit=None)

    return build
