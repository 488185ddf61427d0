"""The System tab (minimal): device, loaded models, queue and prompt-embedding cache. Torch-free.

Refreshed by a button and, while the tab is open, by a timer. ``/system`` returns the same facts as
a dict (see :func:`system_info`).
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from modules.ui.common import status_text
from modules.ui.i18n import Translator

MIB = 2**20
#: seconds between refreshes while the tab is open
REFRESH_S = 2.0


@dataclass
class SystemTab:
    engine_info: gr.Markdown
    cache_info: gr.Markdown
    refresh: gr.Button
    timer: gr.Timer


def system_info(engine) -> dict:
    """Plain data about the engine and its embedding cache (JSON-ready)."""
    status = engine.status()
    stats = engine.cache_stats()
    return {
        "state": status.state,
        "model": status.model,
        "family": status.family,
        "message": status.message,
        "device": status.device,
        "dtype": status.dtype,
        "in_ram": list(getattr(status, "in_ram", ()) or ()),
        "queue_length": status.queue_length,
        "embedding_cache": {
            "hits": stats.hits,
            "misses": stats.misses,
            "hit_rate": round(stats.hit_rate, 4),
            "entries": stats.entries,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "time_saved_s": round(stats.time_saved_s, 3),
            "disk_entries": stats.disk_entries,
            "disk_bytes": stats.disk_bytes,
            "disk_hits": stats.disk_hits,
        },
    }


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}"


def engine_text(t: Translator, engine) -> str:
    status = engine.status()
    in_ram = ", ".join(getattr(status, "in_ram", ()) or ()) or t("system.none")
    return t("system.engine", status=status_text(t, status), device=status.device, dtype=status.dtype,
             in_ram=in_ram, queue=status.queue_length)


def cache_text(t: Translator, engine) -> str:
    s = engine.cache_stats()
    return t("system.cache", hits=s.hits, misses=s.misses, rate=f"{s.hit_rate:.0%}", entries=s.entries,
             mib=_mib(s.bytes), max_mib=_mib(s.max_bytes), saved=f"{s.time_saved_s:.1f}",
             disk_entries=s.disk_entries, disk_mib=_mib(s.disk_bytes), disk_hits=s.disk_hits)


def make_refresh(engine, t: Translator):
    """Handler: ``(engine markdown, cache markdown)``."""

    def refresh():
        return engine_text(t, engine), cache_text(t, engine)

    return refresh


def build(engine, t: Translator) -> SystemTab:
    """Lay out the tab, wire the refresh button and the ``/system`` endpoint.

    The timer starts inactive; the page turns it on while this tab is selected (:func:`timer_update`).
    """
    engine_md = gr.Markdown(engine_text(t, engine), elem_id="system_engine")
    cache_md = gr.Markdown(cache_text(t, engine), elem_id="system_cache")
    with gr.Row():
        refresh = gr.Button(t("system.refresh"), size="sm", scale=0, min_width=120, elem_id="system_refresh")
    timer = gr.Timer(REFRESH_S, active=False)
    handler = make_refresh(engine, t)
    refresh.click(handler, None, [engine_md, cache_md], api_visibility="private", show_progress="hidden")
    timer.tick(handler, None, [engine_md, cache_md], api_visibility="private", show_progress="hidden",
               concurrency_limit=None)

    def system() -> dict:
        """Device, loaded models, queue length and embedding-cache statistics."""
        return system_info(engine)

    data = gr.JSON(visible=False, label=t("system.data"))
    gr.on(triggers=[], fn=system, inputs=None, outputs=data, api_name="system", concurrency_limit=None)
    return SystemTab(engine_md, cache_md, refresh, timer)


def timer_update(active: bool) -> gr.Timer:
    return gr.Timer(active=active)
