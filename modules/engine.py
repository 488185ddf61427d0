"""The engine: state built once from Settings and passed to the page, the CLI and the API.

It owns the registry (identify), the model manager (load/switch) and the job queue (run), and is
the only object the UI talks to. Every device-touching action is a job on the one queue.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from modules import __version__
from modules.devices import dtype_name, resolve_device, vram_info
from modules.embedding_cache import CacheKey, CacheStats, EmbeddingCache, SkipWarm, text_encoder_state
from modules.downloads import SUGGESTED, download_repo
from modules.extensions import ExtensionSet
from modules.extensions.postprocess import run_postprocessors
from modules.errors import InvalidRequest, MissingComponent, NotReady, OutOfMemory, UnsupportedModel
from modules.families import Family
from modules.generation.encoding import encode_prompts, uses_cfg
from modules.generation.params import GenerationRequest, GenerationResult
from modules.generation.prompting import resolve_prompts
from modules.generation.txt2img import txt2img
from modules.jobs import Job, JobContext, JobQueue
from modules.loader import load_pipeline
from modules.lora import LoraInfo, check_compatible, find_lora, lora_folders, parse_prompt_loras, scan_loras
from modules.lora.patcher import ApplyReport, LoraPatcher
from modules.manager import LoadedModel, ModelManager, release_memory
from modules.outputs.infotext import build_infotext
from modules.outputs.saving import save_png
from modules.registry import HashCache, ModelRegistry
from modules.presets import PresetStore, apply_preset
from modules.registry.entry import ModelEntry, ModelFormat
from modules.settings import REPO_ROOT, Settings
from modules.styles import Style, load_styles

log = logging.getLogger(__name__)

#: the background warm-up gives up when a single prompt encode takes longer than this
WARM_MAX_ENCODE_S = 2.0


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
    def __init__(self, settings: Settings, extensions: ExtensionSet | None = None):
        self.settings = settings
        self.folders = settings.folders
        self.registry = ModelRegistry(self.folders, HashCache(self.folders.cache / "hashes.json"),
                                      hf_cache=settings.hf_cache, allow_pickle=settings.allow_pickle)
        self.device = resolve_device(settings.device)
        self.manager = ModelManager(self._load, device=self.device, dtype=settings.dtype,
                                    ram_cache=settings.ckpt_cache)
        self.queue = JobQueue(max_pending=settings.max_queue)
        self.downloads = JobQueue(max_pending=4, name="visage-downloads")
        self.presets = PresetStore([REPO_ROOT / "presets", settings.presets_dir], save_dir=settings.presets_dir)
        self.embed_cache = EmbeddingCache(
            max_bytes=settings.embed_cache_mb * 2**20,
            persist_dir=self.folders.cache / "embeddings" if settings.embed_cache_persist else None)
        self.lora_patcher = LoraPatcher(hash_cache=self.registry.hash_cache)
        self._loras: list[LoraInfo] | None = None  # scanned on first use
        self._selected: ModelEntry | None = None  # the model the user last chose (may still be loading)
        self._recent_prompts: deque[tuple[str, str]] = deque(maxlen=8)  # (prompt, negative) as typed
        self._closing = threading.Event()
        self._warm_thread: threading.Thread | None = None
        self._taes: dict = {}  # family -> TaeDecoder (live previews), loaded on first use
        self._warm_generation = 0  # bumped at each load: an older warm-up stops
        self.extensions = extensions or ExtensionSet.empty()  # loaded once by webui.py / the CLI
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
        """Stop the worker and the warm-up and wait for both: a thread left inside a torch op at interpreter
        exit aborts the process ("terminate called without an active exception")."""
        self._closing.set()
        self.queue.stop()
        self.downloads.stop()
        self.wait_for_warming(timeout=60)
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

    @property
    def selected(self) -> ModelEntry | None:
        """The model chosen last (at start, on the page or through the API; it may still be loading).
        Requests that name no model run on it."""
        return self._selected

    def family_of(self, model_name: str | None = None) -> Family:
        """Family of ``model_name``, or of the selected model (SD1.5 when none is)."""
        if model_name:
            return self._resolve(model_name).family
        return self._selected.family if self._selected else Family.SD15

    def suggested_models(self) -> list[dict]:
        return [s.to_dict() for s in SUGGESTED]

    def queue_position(self, job: Job) -> int:
        return self.queue.position(job)

    def vram(self) -> dict | None:
        """GPU memory in bytes (see :func:`modules.devices.vram_info`); None on CPU."""
        return vram_info(self.device)

    def loras(self, refresh: bool = False) -> list[LoraInfo]:
        """LoRA files in models/Lora and --lora-dir folders (headers only; hashes on use)."""
        if refresh or self._loras is None:
            self._loras = scan_loras(lora_folders(self.folders, self.settings.lora_dirs))
        return self._loras

    def styles(self) -> dict[str, Style]:
        return load_styles(self.settings.styles_file)

    def cache_stats(self) -> CacheStats:
        return self.embed_cache.stats()

    def wait_for_warming(self, timeout: float | None = None) -> bool:
        """Block until the background embedding warm-up (started after each load) has finished."""
        thread = self._warm_thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

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
        req = resolve_prompts(request, entry.family, self.presets, self.settings.styles_file)
        req = req.with_defaults(entry.family)
        req.check_inputs(entry.family)
        self._check_backend(req, entry)
        self.extensions.resolve_postprocess(req.postprocess)  # InvalidRequest for an unknown id
        loras = self._wanted_loras(req, entry)
        job = self.queue.submit("generate", partial(self._generate_job, entry, req, loras))
        if (request.prompt, request.negative_prompt) not in self._recent_prompts:
            self._recent_prompts.append((request.prompt, request.negative_prompt))
        return job

    def interrupt(self) -> bool:
        return self.queue.interrupt()

    def merge_lora(self, base: str, loras: list[tuple[str, float, float]], out_name: str, *,
                   fmt: str = "single-file", dtype: str = "fp16") -> Job:
        """Fuse ``loras`` ((name, U-Net weight, text-encoder weight)) into ``base`` and save a new model
        into models/Stable-diffusion (atomically). A job on the one queue; it returns the new entry."""
        from modules.lora.merge import merge_output_path

        entry = self._resolve(base)
        infos = self.loras()
        wanted = [(find_lora(infos, name), float(u), float(t)) for name, u, t in loras]
        for info, _u, _t in wanted:
            check_compatible(info, entry.family)
        out_path = merge_output_path(self.folders, out_name, fmt)
        return self.queue.submit("merge", partial(self._merge_job, entry, wanted, out_path, fmt, dtype))

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
            loaded = self.manager.activate(entry)
        except Exception:
            current = self.manager.current
            if self._selected is entry:  # a failed switch leaves the previous model selected
                self._selected = current.entry if current else None
            raise
        self.registry.ensure_hash(loaded.entry)
        if self.settings.warm_presets:
            self._warm_generation += 1
            self._warm_thread = threading.Thread(target=self._warm_cache, args=(loaded, self._warm_generation),
                                                 name="visage-warm", daemon=True)
            self._warm_thread.start()
        return loaded.entry

    def _generate_job(self, entry: ModelEntry, req: GenerationRequest,
                      loras: list[tuple[LoraInfo, float, float]], ctx: JobContext) -> GenerationResult:
        start = time.perf_counter()
        clean_prompt, _tags = parse_prompt_loras(req.prompt)  # tags stay in the infotext, as in A1111
        with self.manager.lock:
            loaded = self.manager.activate(entry, on_phase=ctx.report)
            self.registry.ensure_hash(loaded.entry)
            report = (self.lora_patcher.apply(loaded.pipe, loaded.family, loras)  # [] restores the base
                      if not _is_edge(loaded) else ApplyReport())
            te_state = text_encoder_state(report.text_encoder_state)
            oom = None
            try:
                out = txt2img(loaded.pipe, loaded.family, replace(req, prompt=clean_prompt), ctx,
                              device=self.device, encode=partial(self._encode_cached, loaded, te_state),
                              tae=self._tae_for(loaded, req))
                post = run_postprocessors(  # extensions' post-processors, still on the device lock
                    out.images, out.seeds, req, self.extensions.resolve_postprocess(req.postprocess),
                    report=ctx.report, check_cancelled=ctx.check_cancelled, options_for=self.extensions.options,
                    device=str(self.device))
            except (MemoryError, torch.OutOfMemoryError) as exc:
                oom = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            if oom is not None:  # out of the except block: the failed call's tensors are unreferenced now
                release_memory(self.device)
                raise OutOfMemory(f"out of memory while generating ({oom}); the memory was released, "
                                  "try a smaller size or batch")
        notes = list(report.notes) + post.notes
        if report.unmatched_count:
            notes.append(f"{report.unmatched_count} LoRA layer(s) matched no module, e.g. "
                         + ", ".join(report.unmatched_examples))
            log.warning("LoRA: %s", notes[-1])
        extra = {"Lora hashes": ", ".join(f"{a.name}: {a.hash}" for a in report.active)} if report.active else {}
        ctx.report("saving", ctx.progress.total, ctx.progress.total)
        infotexts, paths = [], []
        for image, seed, post_params in zip(post.images, out.seeds, post.infotexts):
            params = self._infotext_params(req, loaded.entry, seed) | extra
            params |= {k: v for k, v in post_params.items() if k not in params}
            params["Version"] = params.pop("Version")
            text = build_infotext(req.prompt, req.negative_prompt, params)
            infotexts.append(text)
            if req.save:
                paths.append(str(save_png(image, text, self.folders.txt2img_outputs(), seed)))
        return GenerationResult(images=post.images, seeds=out.seeds, infotexts=infotexts, paths=paths,
                                model=loaded.entry.title, elapsed_s=time.perf_counter() - start, notes=notes)

    def _wanted_loras(self, req: GenerationRequest, entry: ModelEntry) -> list[tuple[LoraInfo, float, float]]:
        """``<lora:…>`` tags in the prompt plus the request's list, resolved and checked at submit."""
        _clean, tags = parse_prompt_loras(req.prompt)
        wanted = [(t.name, t.unet_weight, t.te_weight) for t in tags]
        wanted += [(name, float(weight), float(weight)) for name, weight in req.loras]
        if not wanted:
            return []
        infos = self.loras()
        resolved = []
        for name, unet_w, te_w in wanted:
            info = find_lora(infos, name)
            check_compatible(info, entry.family)  # LoraError names both families
            resolved.append((info, unet_w, te_w))
        return resolved

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

    # -- prompt embeddings -------------------------------------------------------------------
    def _cache_key(self, loaded: LoadedModel, te_state: str, prompt: str, negative: str, do_cfg: bool,
                   clip_skip: int) -> CacheKey:
        return CacheKey(loaded.entry.hash or str(loaded.entry.path), te_state, clip_skip, prompt, negative,
                        options={"family": loaded.family.value, "do_cfg": do_cfg,
                                 "dtype": dtype_name(loaded.dtype)})

    def _encode_cached(self, loaded: LoadedModel, te_state: str, prompt: str, negative: str, do_cfg: bool,
                       clip_skip: int):
        """The txt2img encode step, through the cache. Runs on the worker with the device lock held;
        ``te_state`` names the LoRAs active on the text encoder(s) right now."""
        key = self._cache_key(loaded, te_state, prompt, negative, do_cfg, clip_skip)
        return self.embed_cache.get_or_compute(key, partial(
            self._encoder(loaded), prompt, negative, do_cfg=do_cfg, clip_skip=clip_skip), device=self.device)

    def _warm_cache(self, loaded: LoadedModel, generation: int) -> None:
        """Background: pre-compute every preset's embeddings (empty and recent user prompts).

        Each entry waits until the queue is empty and then holds the device lock for one encode
        only, so a generation waits behind at most one text-encoder call. Stops when another model
        loads, and gives up when one encode is slower than WARM_MAX_ENCODE_S (a 4B text encoder on
        a CPU): warming would then hog the device for minutes.
        """
        slow = threading.Event()

        def should_stop() -> bool:
            return (self._closing.is_set() or slow.is_set() or generation != self._warm_generation
                    or self.manager.current is not loaded)

        def compute(prompt: str, negative: str, do_cfg: bool, clip_skip: int):
            while len(self.queue) and not should_stop():
                time.sleep(0.05)
            with self.manager.lock:
                if should_stop() or self.lora_patcher.text_encoder_state(loaded.pipe):
                    raise SkipWarm
                start = time.perf_counter()
                embeds = self._encoder(loaded)(prompt, negative, do_cfg=do_cfg, clip_skip=clip_skip)
            if time.perf_counter() - start > WARM_MAX_ENCODE_S:
                slow.set()
                log.info("embedding warm-up stopped: one encode took %.1f s on %s",
                         time.perf_counter() - start, self.device)
            return embeds

        jobs = []
        for preset in self.presets.list():
            for user_prompt, user_negative in [("", ""), *reversed(self._recent_prompts)]:
                f = apply_preset(preset, user_prompt, loaded.family, user_negative)
                prompt, tags = parse_prompt_loras(f["prompt"])
                if tags:  # its LoRAs would change the embeddings: computed on first use instead
                    continue
                do_cfg = uses_cfg(loaded.family, f["cfg_scale"])
                args = (prompt, f["negative_prompt"], do_cfg, f["clip_skip"])
                jobs.append((self._cache_key(loaded, "", *args), partial(compute, *args)))
        report = self.embed_cache.warm(jobs, should_stop=should_stop)
        log.info("embedding cache warmed for %s: %s", loaded.entry.name, report)

    # -- helpers -----------------------------------------------------------------------------
    def _load(self, entry: ModelEntry, dtype: torch.dtype):
        if entry.format == ModelFormat.EDGE:
            from modules.edge.runtime import load_edge_pipeline
            return load_edge_pipeline(entry.path, providers=self.settings.onnx_providers,
                                      threads=self.settings.onnx_threads)
        return load_pipeline(entry, folders=self.folders, hf_cache=self.settings.hf_cache, torch_dtype=dtype)

    # -- edge packages, backends and TAESD ---------------------------------------------------
    def build_edge(self, model: str, options, name: str | None = None) -> Job:
        """Queue ``build-edge`` for ``model`` (``options``: :class:`modules.edge.build.EdgeBuildOptions`).
        Progress phases are the build steps; the job returns the package folder."""
        from modules.edge.build import EdgeBuildOptions, build_edge_for

        entry = self._resolve(model)
        if isinstance(options, dict):  # from the page or the API: plain data
            options = EdgeBuildOptions(**options)
        options.check()

        def run(ctx: JobContext):
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

    def _check_backend(self, req: GenerationRequest, entry: ModelEntry) -> None:
        """Edge packages run on the onnx backend, everything else on diffusers; say so at submit."""
        backend = req.backend if req.backend != "auto" else self.settings.backend
        edge = entry.format == ModelFormat.EDGE
        if backend == "onnx" and not edge:
            raise InvalidRequest("backend", f"{entry.name} is not an edge package; build one with "
                                 f"`python -m modules.cli build-edge --model {entry.name}` or use backend auto")
        if backend == "diffusers" and edge:
            raise InvalidRequest("backend", f"{entry.name} is an edge package: it runs on the onnx backend")
        if edge and (req.loras or parse_prompt_loras(req.prompt)[1]):
            merged = ", ".join(x["name"] for x in (entry.details.get("manifest") or {}).get("loras", [])) or "none"
            raise InvalidRequest("loras", f"LoRAs are merged into edge packages when they are built "
                                 f"(this one has: {merged})")

    def _encoder(self, loaded: LoadedModel):
        """``(prompt, negative, do_cfg=, clip_skip=) -> embeds`` for the loaded model."""
        if _is_edge(loaded):
            return loaded.pipe.encode_prompts
        return partial(encode_prompts, loaded.pipe, loaded.family, device=self.device)

    def _tae_for(self, loaded: LoadedModel, req: GenerationRequest):
        """The TAESD decoder for previews / the fast final decode, or None when neither is asked for.

        Missing TAESD weights: previews are skipped (logged); ``decoder="taesd"`` raises MissingComponent."""
        if not (req.preview_every or req.decoder == "taesd"):
            return None
        if _is_edge(loaded):
            tae = loaded.pipe.tae()
            if tae is None and req.decoder == "taesd":
                raise MissingComponent(f"{loaded.entry.name} has no TAESD decoder; rebuild it with TAESD")
            return tae
        from modules.taesd import TaeDecoder, load_taesd

        cache = self._taes
        if loaded.family not in cache:
            try:
                tae = load_taesd(loaded.family, self.folders, self.settings.hf_cache)
            except MissingComponent:
                if req.decoder == "taesd":
                    raise
                log.warning("live previews need TAESD weights; none found for %s", loaded.family.value)
                return None
            cache[loaded.family] = TaeDecoder(tae)
        return cache[loaded.family].to(self.device, loaded.dtype)

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
        if req.decoder == "taesd":
            params["Decoder"] = "TAESD"
        params.update(req.extra_infotext)
        params["Version"] = f"Visage {__version__}"
        return {k: v for k, v in params.items() if v is not None and v != ""}


def _is_edge(loaded: LoadedModel) -> bool:
    return bool(getattr(loaded.pipe, "edge", False))
