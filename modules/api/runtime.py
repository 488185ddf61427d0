"""What both APIs share: the engine, limits, options, and submitting/awaiting jobs on the one queue.

Requests never run work themselves: they put a job on ``engine.queue`` (the same queue the page uses)
and wait for it without holding a thread. A full queue is an immediate 503 with ``Retry-After``;
an accepted job always runs, even if its client goes away. Torch-free.
"""
from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import replace

from starlette.concurrency import run_in_threadpool

from modules.api.errors import to_api_error
from modules.api.models import ApiLimits
from modules.api.names import check_name, resolve_lora, resolve_model
from modules.api.options import OptionsStore
from modules.errors import InvalidRequest, QueueFull
from modules.generation.params import GenerationRequest, GenerationResult
from modules.generation.prompting import resolve_prompts
from modules.lora import parse_prompt_loras
from modules.taesd import find_taesd, missing_message

#: how often a waiting request looks at its job (seconds, growing to the maximum)
POLL_START_S = 0.01
POLL_MAX_S = 0.1


class ApiRuntime:
    """State of one API instance (built by :func:`modules.api.build_api`)."""

    def __init__(self, engine, settings, limits: ApiLimits, options: OptionsStore, extensions=None):
        self.engine = engine
        self.extensions = extensions  # modules.extensions.ExtensionSet (None: no extensions)
        self.settings = settings
        self.limits = limits
        self.options = options
        self._lock = threading.Lock()
        self._avg_job_s = 1.0  # running average of job durations, for Retry-After

    # -- queue ---------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: about one job's duration."""
        with self._lock:
            return max(1, min(60, math.ceil(self._avg_job_s)))

    def _record(self, seconds: float) -> None:
        with self._lock:
            self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * max(0.0, seconds)

    async def submit(self, fn, *args):
        """Run a submitting call (``engine.generate``, ``engine.switch_model``) off the event loop;
        typed errors become HTTP errors, a full queue a 503 with Retry-After."""
        try:
            return await run_in_threadpool(fn, *args)
        except QueueFull as exc:
            raise to_api_error(exc, retry_after=self.retry_after()) from None

    async def wait(self, job):
        """The job's result once it has finished; its failure as an :class:`ApiError`
        (an interrupted job: 409 ``interrupted``)."""
        delay = POLL_START_S
        while not job.done_event.is_set():
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_S, delay * 1.5)
        if job.error is not None:
            raise to_api_error(job.error, retry_after=self.retry_after())
        if isinstance(job.result, GenerationResult):
            self._record(job.result.elapsed_s)
        return job.result

    # -- requests --------------------------------------------------------------------------------
    def checked_request(self, req: GenerationRequest) -> GenerationRequest:
        """``req`` with its model resolved to a registered name inside the model folders, and every
        LoRA, preset and style name checked (runs in a worker thread: it may scan folders)."""
        engine = self.engine
        if req.model:
            req = replace(req, model=resolve_model(engine, "model", req.model).name)
        if req.preset:
            check_name("preset", req.preset)
        for i, style in enumerate(req.styles):
            check_name(f"styles.{i}", style)
        for i, (name, _weight) in enumerate(req.loras):
            resolve_lora(engine, f"loras.{i}.name", name)
        for field in ("prompt", "negative_prompt"):
            _clean, tags = parse_prompt_loras(getattr(req, field))
            for tag in tags:
                resolve_lora(engine, field, tag.name)
        self.check_limits(req)
        return req

    def check_limits(self, req: GenerationRequest) -> None:
        """The request as it will run (preset and family defaults filled in) must fit the limits."""
        engine, lim = self.engine, self.limits
        family = engine.family_of(req.model)
        entry = engine.registry.get(req.model) if req.model else engine.selected
        if req.decoder == "taesd" and (entry is None or entry.format != "edge") \
                and find_taesd(family, engine.folders, self.settings.hf_cache) is None:
            raise InvalidRequest("decoder", "'taesd' needs TAESD weights, which this server lacks; use 'vae' ("
                                 + missing_message(family, engine.folders) + ")")
        final = resolve_prompts(req, family, engine.presets, self.settings.styles_file).with_defaults(family)
        for field in ("width", "height"):
            value = getattr(final, field)
            if not lim.min_side <= value <= lim.max_side:
                raise InvalidRequest(field, f"must be between {lim.min_side} and {lim.max_side} on this server "
                                            f"({value} from the preset or model defaults)")
        for field, top in (("steps", lim.max_steps), ("batch_size", lim.max_batch_size),
                           ("batch_count", lim.max_batch_count)):
            if getattr(final, field) > top:
                raise InvalidRequest(field, f"must be at most {top} on this server "
                                            f"({getattr(final, field)} from the preset or model defaults)")

    def _submit_generation(self, req: GenerationRequest):
        return self.engine.generate(self.checked_request(req))

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """Check, queue and await one generation."""
        job = await self.submit(self._submit_generation, req)
        return await self.wait(job)

    async def switch(self, name: str, field: str = "model"):
        """Switch the current model and wait until it is loaded; returns its registry entry."""
        def start():
            entry = resolve_model(self.engine, field, name)
            return self.engine.switch_model(entry.name)

        job = await self.submit(start)
        return await self.wait(job)
