"""The engine: state built once from Settings and passed to the page, the CLI and the API.

It owns the registry (identify), the model manager (load/switch) and the job queue (run), and is
the only object the UI talks to. Every device-touching action is a job on the one queue.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from modules.backends.base import Capability
from modules.backends.diffusers import DiffusersBackend
from modules.backends.taesd import TaesdSource
from modules.checkpoints.hf_cache import default_hf_cache
from modules.devices import resolve_device, vram_info
from modules.downloads import SUGGESTED, download_repo
from modules.embedding_cache import CacheStats, EmbeddingCache
from modules.engine.generate import GenerationRunner
from modules.engine.prepare import PreparedJob, Preparer
from modules.engine.warmup import WarmUp
from modules.errors import NotReady, UnsupportedModel
from modules.extensions import ExtensionSet
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.jobs import Job, JobContext, JobQueue
from modules.loader import load_pipeline
from modules.lora import LoraInfo, lora_folders, scan_loras
from modules.lora.patcher import LoraPatcher
from modules.manager import ModelManager
from modules.messages import Message
from modules.names import UnsafeField, check_name, inside
from modules.presets import Preset, PresetStore
from modules.registry import HashCache, ModelRegistry
from modules.registry.entry import ModelEntry, ModelFormat
from modules.settings import REPO_ROOT, Settings
from modules.states import ModelState
from modules.styles import Style, load_styles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStatus:
    state: ModelState
    model: str | None
    family: str | None
    message: str
    queue_length: int
    device: str
    dtype: str
    in_ram: tuple[str, ...] = ()


class Engine:
    def __init__(self, settings: Settings, extensions: ExtensionSet | None = None):
        self.settings = settings
        self.folders = settings.folders
        self.registry = ModelRegistry(self.folders, HashCache(self.folders.cache / "hashes.json"),
                                      hf_cache=settings.hf_cache, allow_pickle=settings.allow_pickle)
        self.device = resolve_device(settings.device)
        self.manager = ModelManager(self._load, device=self.device, dtype=settings.dtype,
                                    ram_cache=settings.ckpt_cache)
        self.queue = JobQueue(max_pending=settings.max_queue)
        self.downloads = JobQueue(max_pending=4, name="visage-downloads")  # network only, never the device
        self._presets = PresetStore([REPO_ROOT / "presets", settings.presets_dir], save_dir=settings.presets_dir)
        self.embed_cache = EmbeddingCache(
            max_bytes=settings.embed_cache_mb * 2**20,
            persist_dir=self.folders.cache / "embeddings" if settings.embed_cache_persist else None)
        self.lora_patcher = LoraPatcher(hash_cache=self.registry.hash_cache)
        self.taesd = TaesdSource(self.folders, settings.hf_cache, job_hooks=self._job_hooks)
        self.extensions = extensions or ExtensionSet.empty()  # loaded once by webui.py / the CLI
        self._loras: list[LoraInfo] | None = None  # scanned on first use
        self._selected: ModelEntry | None = None  # the model the user last chose (may still be loading)
        self._recent_prompts: deque[tuple[str, str]] = deque(maxlen=8)  # (prompt, negative) as typed
        self.warmup = WarmUp(self.queue, self.manager, self.embed_cache, self._presets, self._recent_prompts)
        self.preparer = Preparer(
            presets=self._presets, styles_file=settings.styles_file, loras=self.loras, lora_roots=self.lora_roots,
            taesd_available=self.taesd.available, taesd_missing=self.taesd.missing_message,
            extensions=self.extensions, default_backend=settings.backend)
        self.runner = GenerationRunner(
            manager=self.manager, embed_cache=self.embed_cache, ensure_hash=self.registry.ensure_hash,
            options_for=self.extensions.options, outputs_dir=self.folders.txt2img_outputs, device=self.device,
            models_dir=lambda: self.folders.models)
        self.extensions.bind(self)

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
        """Stop the workers (the running job finishes; queued warm-up jobs are dropped) and free the models."""
        self.warmup.closing.set()
        self.queue.stop()
        self.downloads.stop()
        self.manager.unload_all()

    # -- queries -----------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        m = self.manager.status()
        message = m.message
        if m.state == ModelState.IDLE and not self._first_supported():
            message = f"no models found in {self.folders.checkpoints}"
        return EngineStatus(state=m.state, model=m.model, family=m.family, message=message,
                            queue_length=len(self.queue), device=m.device, dtype=m.dtype, in_ram=m.in_ram)

    def models(self, refresh: bool = False) -> list[ModelEntry]:
        return self.registry.refresh() if refresh else self.registry.entries()

    def model(self, name: str, field: str = "model") -> ModelEntry:
        """The registered, supported model called ``name`` (name, title, hash or path), inside the model
        folders. ModelNotFound / UnsupportedModel / UnsafeField (naming ``field``) otherwise."""
        entry = self.registry.get(check_name(field, name))
        if not inside(Path(entry.path), self.model_roots()):
            raise UnsafeField(field, Message("rule.model_outside", name=entry.name))
        if not entry.supported:
            raise UnsupportedModel(f"{entry.name}: {entry.reason}")
        return entry

    def model_roots(self) -> list[Path]:
        """Folders models may come from: models/Stable-diffusion, models/edge, the Hugging Face cache."""
        hf = self.settings.hf_cache if self.settings.hf_cache is not None else default_hf_cache()
        return [self.folders.checkpoints, self.folders.edge, Path(hf)]

    def lora_roots(self) -> list[Path]:
        return lora_folders(self.folders, self.settings.lora_dirs)

    def model_sha256(self, entry: ModelEntry) -> str | None:
        """The full sha256 of a single-file model when it has been computed (A1111's ``sha256`` field)."""
        return self.registry.hash_cache.cached_sha256(entry.path) if Path(entry.path).is_file() else None

    @property
    def selected(self) -> ModelEntry | None:
        """The model chosen last (at start, on the page or through the API; it may still be loading).
        Requests that name no model run on it."""
        return self._selected

    def family_of(self, model_name: str | None = None) -> Family:
        """Family of ``model_name``, or of the selected model (SD1.5 when none is)."""
        if model_name:
            return self.model(model_name).family
        return self._selected.family if self._selected else Family.SD15

    def suggested_models(self) -> list[dict]:
        return [s.to_dict() for s in SUGGESTED]

    def queue_position(self, job: Job) -> int:
        return self.queue.position(job)

    def current_job(self) -> Job | None:
        """The running job a user asked for (background warm-up jobs are not shown)."""
        job = self.queue.current
        return job if job is not None and job.priority == 0 else None

    def queue_length(self) -> int:
        return len(self.queue)

    def vram(self) -> dict | None:
        """GPU memory in bytes (see :func:`modules.devices.vram_info`); None on CPU."""
        return vram_info(self.device)

    def loras(self, refresh: bool = False) -> list[LoraInfo]:
        """LoRA files in models/Lora and --lora-dir folders (headers only; hashes on use)."""
        if refresh or self._loras is None:
            self._loras = scan_loras(self.lora_roots())
        return self._loras

    def styles(self) -> dict[str, Style]:
        return load_styles(self.settings.styles_file)

    def cache_stats(self) -> CacheStats:
        return self.embed_cache.stats()

    def wait_for_warming(self, timeout: float | None = None) -> bool:
        """Block until the embedding warm-up queued after the last load has ended."""
        return self.warmup.wait(timeout)

    # -- presets -----------------------------------------------------------------------------
    def presets(self) -> list[Preset]:
        return self._presets.list()

    def preset(self, preset_id: str) -> Preset:
        """InvalidRequest("preset", …) when there is none with that id."""
        return self._presets.get(preset_id)

    def save_preset(self, preset: Preset) -> Path:
        return self._presets.save(preset)

    def delete_preset(self, preset_id: str) -> None:
        """Only user presets (in --presets-dir) can be deleted: InvalidRequest for a built-in one."""
        self._presets.delete(preset_id)

    def is_user_preset(self, preset_id: str) -> bool:
        return self._presets.path_of(preset_id).parent.resolve() == self._presets.save_dir.resolve()

    def preset_thumbnail(self, preset_id: str) -> Path | None:
        return self._presets.thumbnail_path(preset_id)

    def reload_presets(self) -> None:
        self._presets.reload()

    def preset_errors(self) -> list:
        """The preset files that could not be loaded (:class:`modules.presets.PresetError`: file, field, problem)."""
        return list(self._presets.errors)

    # -- jobs --------------------------------------------------------------------------------
    def switch_model(self, name: str) -> Job:
        entry = self.model(name)
        self._selected = entry
        self.manager.mark_loading(f"loading {entry.name}")
        return self.queue.submit("switch", partial(self._switch_job, entry))

    def prepare(self, request: GenerationRequest, capability: Capability | None = None) -> PreparedJob:
        """Check and resolve ``request`` (raises InvalidRequest, UnsupportedCapability, LoraError, …) on the
        model it names, or the selected one. The job it becomes is pinned to that model. ``capability``
        defaults to what the request asks for (init image: img2img; init image + mask: inpainting)."""
        entry = self.model(request.model) if request.model else self._selected
        if entry is None:
            raise NotReady(self.status().message or "no model selected")
        return self.preparer.prepare(request, entry, capability)

    def generate(self, request: GenerationRequest | PreparedJob) -> Job:
        """Prepare (unless already prepared), then queue. The job returns a GenerationResult.

        The job is pinned to the model chosen at submit time, so a switch queued in between
        cannot change what it runs on."""
        job = request if isinstance(request, PreparedJob) else self.prepare(request)
        queued = self.queue.submit("generate", partial(self.runner.run, job))
        typed = (job.request.prompt, job.request.negative_prompt) if isinstance(request, PreparedJob) \
            else (request.prompt, request.negative_prompt)
        if typed not in self._recent_prompts:
            self._recent_prompts.append(typed)
        return queued

    def submit(self, kind: str, fn) -> Job:
        """Run ``fn(ctx)`` on the one queue (extensions' jobs: one at a time with generations)."""
        return self.queue.submit(kind, fn)

    def interrupt(self) -> bool:
        return self.queue.interrupt()

    def merge_lora(self, base: str, loras: list[tuple[str, float, float]], out_name: str, *,
                   fmt: str = "single-file", dtype: str = "fp16") -> Job:
        """Fuse ``loras`` ((name, U-Net weight, text-encoder weight)) into ``base`` and save a new model
        into models/Stable-diffusion (atomically). A job on the one queue; it returns the new entry."""
        from modules.lora.merge import merge_output_path

        entry = self.model(base)
        wanted = self.preparer.resolve_loras([(f"loras.{i}.name", name, u, t) for i, (name, u, t) in enumerate(loras)],
                                             entry)
        out_path = merge_output_path(self.folders, out_name, fmt)
        return self.queue.submit("merge", partial(self._merge_job, entry, wanted, out_path, fmt, dtype))

    def download_model(self, repo_id: str) -> Job:
        def run(ctx: JobContext):
            path = download_repo(repo_id, cache_dir=self.settings.hf_cache, on_progress=ctx.report,
                                 should_stop=lambda: ctx.cancelled)
            self.registry.refresh()
            return path
        return self.downloads.submit("download", run)

    # downloads: modules/downloads; network work runs on self.downloads, never on the device queue
    def starter_packs(self) -> list:
        """The starter packs (:class:`modules.downloads.packs.StarterPack`), sizes not asked yet."""
        from modules.downloads.packs import PACKS

        return list(PACKS)

    def plan_download(self, pack: str | None = None, repo_id: str | None = None, filename: str | None = None,
                      url: str | None = None):
        """What a download would fetch, where it goes, its size (from the Hub) and the free disk: a
        :class:`modules.downloads.plan.DownloadPlan`, asked before anything is fetched (DownloadError offline)."""
        from modules.downloads.plan import make_plan

        return make_plan(self.folders, self.settings.hf_cache, pack=pack, repo_id=repo_id, filename=filename,
                         url=url)

    def download(self, plan) -> Job:
        """Run ``plan`` on the downloads queue: phase "downloading NAME", step/total in bytes; cancellable
        (the part files stay for the next run). The registry and the LoRA list are refreshed when it ends."""
        from modules.downloads.plan import run_plan

        def run(ctx: JobContext):
            paths = run_plan(plan, on_progress=ctx.report, should_stop=lambda: ctx.cancelled)
            self.registry.refresh()
            self.loras(refresh=True)
            return paths
        return self.downloads.submit("download", run)

    def build_edge(self, model: str, options, name: str | None = None) -> Job:
        """Queue ``build-edge`` for ``model`` (``options``: :class:`modules.edge.build.EdgeBuildOptions`).
        Progress phases are the build steps; the job returns the package folder."""
        from modules.edge.build import EdgeBuildOptions, build_edge_for, check_source_entry

        entry = self.model(model)
        check_source_entry(entry)  # an SDXL source is refused now, before any TAESD is fetched
        if isinstance(options, dict):  # from the page or the API: plain data
            options = EdgeBuildOptions(**options)
        options.check()

        def run(ctx: JobContext):
            if options.taesd:
                self.taesd.ensure(entry.family)  # fetched now (this job's phase) when absent
            path = build_edge_for(entry, self.folders, name, options, hf_cache=self.settings.hf_cache,
                                  hash_cache=self.registry.hash_cache, lora_dirs=self.settings.lora_dirs,
                                  on_progress=lambda label, i, n: ctx.report(label, i, n),
                                  should_stop=lambda: ctx.cancelled)
            self.registry.refresh()
            return path
        return self.queue.submit("build-edge", run)

    def edge_manifest(self, package) -> dict:
        """The manifest of an edge package folder (checked: MissingComponent / ModelLoadError when broken)."""
        from modules.edge.manifest import check_package

        return check_package(Path(package))

    # -- job bodies (run on the worker thread) -----------------------------------------------
    def _switch_job(self, entry: ModelEntry, ctx: JobContext):
        ctx.report("loading")
        try:
            loaded = self.manager.activate(entry)
        except Exception:
            current = self.manager.current
            if self._selected is entry:  # a failed switch leaves the previous model selected
                self._selected = current.entry if current else None
            raise
        self.registry.ensure_hash(loaded.entry)
        if self.settings.warm_presets:
            self.warmup.start(loaded)  # low-priority jobs behind everything a user queued
        return loaded.entry

    def _merge_job(self, entry: ModelEntry, loras, out_path, fmt: str, dtype: str, ctx: JobContext) -> ModelEntry:
        from modules.lora.merge import merge_loras

        with self.manager.lock:
            loaded = self.manager.activate(entry, on_phase=ctx.report)
            self._selected = loaded.entry
            path = merge_loras(loaded.pipe, loaded.family, loras, out_path=out_path, fmt=fmt, dtype=dtype,
                               base_entry=loaded.entry, patcher=self.lora_patcher,
                               hash_cache=self.registry.hash_cache,
                               on_progress=lambda label, done, total: ctx.report(f"merging: {label}", done, total),
                               should_stop=lambda: ctx.cancelled)
        self.registry.refresh()
        return self.registry.entry_for_path(path)

    # -- helpers -----------------------------------------------------------------------------
    def _load(self, entry: ModelEntry, dtype: torch.dtype):
        """The backend for ``entry``: chosen here, when the model loads, and kept on the loaded model."""
        if entry.format == ModelFormat.EDGE:
            from modules.backends.edge import EdgeBackend
            from modules.edge.runtime import load_edge_pipeline

            return EdgeBackend(load_edge_pipeline(entry.path, providers=self.settings.onnx_providers,
                                                  threads=self.settings.onnx_threads), entry.family)
        on_progress, should_stop = self._job_hooks()  # a CLIP tokenizer fetched on demand reports here
        pipe = load_pipeline(entry, folders=self.folders, hf_cache=self.settings.hf_cache, torch_dtype=dtype,
                             on_progress=on_progress, should_stop=should_stop)
        return DiffusersBackend(pipe, entry.family, device=self.device, dtype=dtype, patcher=self.lora_patcher,
                                taesd=self.taesd)

    def _job_hooks(self):
        """(report, should_stop) of the job running on the worker now, for a fetch inside it; (None, None)
        outside a job. A fetch runs inside the job that needs it, never as a job of its own."""
        job = self.queue.current
        if job is None:
            return None, None
        ctx = JobContext(job)
        return ctx.report, lambda: ctx.cancelled

    def _first_supported(self) -> str | None:
        return next((e.name for e in self.registry.entries()
                     if e.supported and e.format != ModelFormat.EDGE), None)
