"""The System tab: device, dtype, loaded model and models kept in RAM, RAM/VRAM in use, queue, prompt-embedding
cache and package versions. Torch-free: RAM comes from psutil, VRAM from ``engine.vram()`` (the engine asks
torch), versions from the installed packages' metadata.

Refreshed by a button and, while the tab is open, by a timer. ``/system`` returns the same facts as
a dict (see :func:`system_info`).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

import gradio as gr
import psutil

from modules.ui.common import status_text
from modules.ui.i18n import Translator

MIB = 2**20
#: seconds between refreshes while the tab is open
REFRESH_S = 2.0
#: packages whose versions the tab shows (read from their metadata: nothing is imported)
VERSION_PACKAGES = ("torch", "diffusers", "transformers", "gradio", "onnxruntime")


@dataclass
class SystemTab:
    engine_info: gr.Markdown
    cache_info: gr.Markdown
    refresh: gr.Button
    timer: gr.Timer
    memory_info: gr.Markdown | None = None
    versions_info: gr.Markdown | None = None

    @property
    def outputs(self) -> list:
        """What :func:`make_refresh`'s handler returns, in order."""
        return [self.engine_info, self.memory_info, self.cache_info]


def versions() -> dict[str, str | None]:
    """Python, Visage and the main packages' versions (None: not installed)."""
    from modules import __version__

    found: dict[str, str | None] = {"python": platform.python_version(), "visage": __version__}
    for name in VERSION_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def memory(engine) -> dict:
    """RAM of this process and of the machine, and the engine's VRAM figures (None on CPU), in bytes."""
    vm = psutil.virtual_memory()
    vram_fn = getattr(engine, "vram", None)
    return {"process_rss": psutil.Process().memory_info().rss, "ram_used": vm.total - vm.available,
            "ram_total": vm.total, "vram": vram_fn() if vram_fn is not None else None}


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
        "memory": memory(engine),
        "versions": versions(),
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


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def memory_text(t: Translator, engine) -> str:
    m = memory(engine)
    v = m["vram"]
    if v is None:
        vram = t("system.vram_none")
    else:
        vram = t("system.vram", name=v["name"], allocated=_gib(v["allocated"]), reserved=_gib(v["reserved"]),
                 peak=_gib(v["peak"]), used=_gib(v["total"] - v["free"]), total=_gib(v["total"]))
    return t("system.memory", rss=_gib(m["process_rss"]), used=_gib(m["ram_used"]), total=_gib(m["ram_total"]),
             vram=vram)


def versions_text(t: Translator) -> str:
    lines = [f"- **{name}:** {version or t('system.not_installed')}" for name, version in versions().items()]
    return t("system.versions", lines="\n".join(lines))


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


def make_refresh_all(engine, t: Translator):
    """Handler: ``(engine markdown, memory markdown, cache markdown)`` (:attr:`SystemTab.outputs`)."""

    def refresh_all():
        return engine_text(t, engine), memory_text(t, engine), cache_text(t, engine)

    return refresh_all


def build(engine, t: Translator) -> SystemTab:
    """Lay out the tab, wire the refresh button and the ``/system`` endpoint.

    The timer starts inactive; the page turns it on while this tab is selected (:func:`timer_update`).
    """
    with gr.Row():
        with gr.Column():
            engine_md = gr.Markdown(engine_text(t, engine), elem_id="system_engine")
            memory_md = gr.Markdown(memory_text(t, engine), elem_id="system_memory")
        with gr.Column():
            cache_md = gr.Markdown(cache_text(t, engine), elem_id="system_cache")
            versions_md = gr.Markdown(versions_text(t), elem_id="system_versions")
    with gr.Row():
        refresh = gr.Button(t("system.refresh"), size="sm", scale=0, min_width=120, elem_id="system_refresh")
    timer = gr.Timer(REFRESH_S, active=False)
    handler = make_refresh_all(engine, t)
    refresh.click(handler, None, [engine_md, memory_md, cache_md], api_visibility="private",
                  show_progress="hidden")
    timer.tick(handler, None, [engine_md, memory_md, cache_md], api_visibility="private", show_progress="hidden",
               concurrency_limit=None)

    def system() -> dict:
        """Device, loaded models, queue length, RAM/VRAM, versions and embedding-cache statistics."""
        return system_info(engine)

    data = gr.JSON(visible=False, label=t("system.data"))
    gr.on(triggers=[], fn=system, inputs=None, outputs=data, api_name="system", concurrency_limit=None)
    return SystemTab(engine_md, cache_md, refresh, timer, memory_md, versions_md)


def timer_update(active: bool) -> gr.Timer:
    return gr.Timer(active=active)
