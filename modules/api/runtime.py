"""What both APIs share: the engine, limits, options, and submitting/awaiting jobs on the one queue.

Requests never run work themselves: they go through ``engine.prepare`` and put a job on the engine's one queue (the same as the page)
and wait for it without holding a thread. A full queue is an immediate 503 with ``Retry-After``;
an accepted job always runs, even if its client goes away. Torch-free.
"""
from __future__ import annotations

import asyncio
import math
import threading
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from modules.api.errors import to_api_error
from modules.api.models import ApiLimits
from modules.api.options import OptionsStore
from modules.errors import InvalidRequest, QueueFull
from modules.generation.params import GenerationRequest, GenerationResult
from modules.messages import Message

if TYPE_CHECKING:
    from modules.engine.prepare import PreparedJob

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
    def prepare(self, req: GenerationRequest) -> "PreparedJob":
        """``req`` checked and resolved by the engine (model, preset, styles, LoRAs, decoders: the same rules
        as the page), then held to this server's limits (runs in a worker thread: it may scan folders)."""
        prepared = self.engine.prepare(req)
        self.check_limits(prepared.request)
        if prepared.request.enable_hr and prepared.request.init_image is None:  # the hires fix's second pass
            self._check_hires_limits(prepared.request, prepared.entry.family)
        return prepared

    def _check_hires_limits(self, final: GenerationRequest, family) -> None:
        lim = self.limits
        width, height = final.hires_size(family)
        field = "hr_resize_x" if final.hr_resize_x or final.hr_resize_y else "hr_scale"
        for value in (width, height):
            if not lim.min_side <= value <= lim.max_side:
                raise InvalidRequest(field, Message("rule.server_between", low=lim.min_side, high=lim.max_side,
                                                    value=value))
        if final.hr_second_pass_steps > lim.max_steps:
            raise InvalidRequest("hr_second_pass_steps", Message("rule.server_at_most", high=lim.max_steps,
                                                                 value=final.hr_second_pass_steps))

    def check_limits(self, final: GenerationRequest) -> None:
        """The request as it will run (preset and family defaults filled in) must fit the limits."""
        lim = self.limits
        for field in ("width", "height"):
            value = getattr(final, field)
            if not lim.min_side <= value <= lim.max_side:
                raise InvalidRequest(field, Message("rule.server_between", low=lim.min_side, high=lim.max_side,
                                                    value=value))
        for field, top in (("steps", lim.max_steps), ("batch_size", lim.max_batch_size),
                           ("batch_count", lim.max_batch_count)):
            if getattr(final, field) > top:
                raise InvalidRequest(field, Message("rule.server_at_most", high=top, value=getattr(final, field)))

    def _submit_generation(self, req: GenerationRequest):
        return self.engine.generate(self.prepare(req))

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """Check, queue and await one generation."""
        job = await self.submit(self._submit_generation, req)
        return await self.wait(job)

    async def switch(self, name: str, field: str = "model"):
        """Switch the current model and wait until it is loaded; returns its registry entry."""
        def start():
            return self.engine.switch_model(self.engine.model(name, field).name)

        job = await self.submit(start)
        return await self.wait(job)
