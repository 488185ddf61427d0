"""The engine: state built once from Settings and passed to the page, the CLI and the API.

It owns the registry (identify), the model manager (load/switch) and the job queue (run), and is
the only object the UI talks to. Every device-touching action is a job on the one queue.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial

import torch

from modules import __version__
from modules.devices import resolve_device
from modules.downloads import SUGGESTED, download_repo
from modules.errors import NotReady, UnsupportedModel
from modules.families import Family
from modules.generation.params import GenerationRequest, GenerationResult
from modules.generation.txt2img import txt2img
from modules.jobs import Job, JobContext, JobQueue
from modules.loader import load_pipeline
from modules.manager import ModelManager
from modules.outputs.infotext import build_infotext
from modules.outputs.saving import save_png
from modules.registry import HashCache, ModelRegistry
from modules.registry.entry import ModelEntry
from modules.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStatus:
    state: str  # idle | loading | ready | error
    model: str | None
    family: str | None
    message: str
    queue_length: int
    device: str
    dtype: str
    in_ram: tuple[str, ...] = ()


class Engine:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.folders = settings.folders
        self.registry = ModelRegistry(self.folders, HashCache(self.folders.cache / "hashes.json"),
                                      hf_cache=settings.hf_cache)
        self.device = resolve_device(settings.device)
        self.manager = ModelManager(self._load, device=self.device, dtype=settings.dtype,
                                    ram_cache=settings.ckpt_cache)
        self.queue = JobQueue(max_pending=settings.extra.get("max_queue", 64))
        self.downloads = JobQueue(max_pending=4, name="visage-downloads")
        self._selected: ModelEntry | None = None  # the model the user last chose (may still be loading)

    # -- life cycle --------------------------------------------------------------------------
    def start(self, *, load_initial: bool = True) -> Job | None:
        """Start the workers and, in the background, load the first model."""
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self.queue.start()
        self.downloads.start()
        self.registry.scan()
        if not load_initial:
            return None
        name = self.settings.model or self._first_supported()
        if name is None:
            log.warning("no supported model found under %s", self.folders.checkpoints)
            return None
        return self.switch_model(name)

    def close(self) -> None:
        self.queue.stop()
        self.downloads.stop()
        self.manager.unload_all()

    # -- queries -----------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        m = self.manager.status()
        message = m.message
        if m.state == "idle" and not self._first_supported():
            message = f"no models found in {self.folders.checkpoints}"
        return EngineStatus(state=m.state, model=m.model, family=m.family, message=message,
                            queue_length=len(self.queue), device=m.device, dtype=m.dtype, in_ram=m.in_ram)

    def models(self, refresh: bool = False) -> list[ModelEntry]:
        return self.registry.refresh() if refresh else self.registry.entries()

    def family_of(self, model_name: str | None = None) -> Family:
        """Family of ``model_name``, or of the selected model (SD1.5 when none is)."""
        if model_name:
            return self._resolve(model_name).family
        return self._selected.family if self._selected else Family.SD15

    def suggested_models(self) -> list[dict]:
        return [s.to_dict() for s in SUGGESTED]

    def queue_position(self, job: Job) -> int:
        return self.queue.position(job)

    # -- jobs --------------------------------------------------------------------------------
    def switch_model(self, name: str) -> Job:
        entry = self._resolve(name)
        self._selected = entry
        self.manager.mark_loading(f"loading {entry.name}")
        return self.queue.submit("switch", partial(self._switch_job, entry))

    def generate(self, request: GenerationRequest) -> Job:
        """Validate now (raises InvalidRequest), then queue. The job returns a GenerationResult.

        The job is pinned to the model chosen at submit time, so a switch queued in between
        cannot change what it runs on."""
        entry = self._resolve(request.model) if request.model else self._selected
        if entry is None:
            raise NotReady(self.status().message or "no model selected")
        req = request.with_defaults(entry.family)
        req.check_inputs(entry.family)
        return self.queue.submit("generate", partial(self._generate_job, entry, req))

    def interrupt(self) -> bool:
        return self.queue.interrupt()

    def download_model(self, repo_id: str) -> Job:
        def run(ctx: JobContext):
            path = download_repo(repo_id, cache_dir=self.settings.hf_cache,
                                 on_progress=lambda done, total: ctx.report("downloading", done, total))
            self.registry.refresh()
            return path
        return self.downloads.submit("download", run)

    # -- job bodies (run on the worker thread) -----------------------------------------------
    def _switch_job(self, entry: ModelEntry, ctx: JobContext):
        ctx.report("loading")
        try:
            return self.manager.activate(entry).entry
        except Exception:
            current = self.manager.current
            if self._selected is entry:  # a failed switch leaves the previous model selected
                self._selected = current.entry if current else None
            raise

    def _generate_job(self, entry: ModelEntry, req: GenerationRequest, ctx: JobContext) -> GenerationResult:
        start = time.perf_counter()
        with self.manager.lock:
            loaded = self.manager.activate(entry, on_phase=ctx.report)
            self.registry.ensure_hash(loaded.entry)
            out = txt2img(loaded.pipe, loaded.family, req, ctx, device=self.device)
        ctx.report("saving", ctx.progress.total, ctx.progress.total)
        infotexts, paths = [], []
        for image, seed in zip(out.images, out.seeds):
            text = build_infotext(req.prompt, req.negative_prompt, self._infotext_params(req, loaded.entry, seed))
            infotexts.append(text)
            if req.save:
                paths.append(str(save_png(image, text, self.folders.txt2img_outputs(), seed)))
        return GenerationResult(images=out.images, seeds=out.seeds, infotexts=infotexts, paths=paths,
                                model=loaded.entry.title, elapsed_s=time.perf_counter() - start)

    # -- helpers -----------------------------------------------------------------------------
    def _load(self, entry: ModelEntry, dtype: torch.dtype):
        return load_pipeline(entry, folders=self.folders, hf_cache=self.settings.hf_cache, torch_dtype=dtype)

    def _resolve(self, name: str) -> ModelEntry:
        entry = self.registry.get(name)
        if not entry.supported:
            raise UnsupportedModel(f"{entry.name}: {entry.reason}")
        return entry

    def _first_supported(self) -> str | None:
        return next((e.name for e in self.registry.entries() if e.supported and e.format != "edge"), None)

    @staticmethod
    def _infotext_params(req: GenerationRequest, entry: ModelEntry, seed: int) -> dict:
        params = {
            "Steps": req.steps, "Sampler": req.sampler, "CFG scale": req.cfg_scale, "Seed": seed,
            "Size": f"{req.width}x{req.height}", "Model hash": entry.hash, "Model": entry.name,
        }
        if req.clip_skip > 1:
            params["Clip skip"] = req.clip_skip
        if req.preset:
            params["Preset"] = req.preset
        if req.styles:
            params["Styles"] = ", ".join(req.styles)
        params.update(req.extra_infotext)
        params["Version"] = f"Visage {__version__}"
        return {k: v for k, v in params.items() if v is not None and v != ""}
