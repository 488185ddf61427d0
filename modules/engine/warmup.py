"""Prompt-embedding warm-up: after each load, every preset's embeddings are computed ahead of use.

The warm-up is ordinary work on the one job queue, at background priority: one encode per job, each job
queueing the next. A generation always runs before the next warm job, and no job ever waits for another
(they cannot run at the same time), so the warm-up can neither delay a user by more than one encode nor
dead-lock with a generation that needs the same embeddings. It stops when another model loads, when the
engine closes, and when one encode is slower than ``max_encode_s`` (a 4B text encoder on a CPU: warming
would hog the device for minutes).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from modules.embedding_cache import CacheKey, EmbeddingCache
from modules.generation.encoding import uses_cfg
from modules.jobs import JobContext, JobQueue, Priority
from modules.lora import parse_prompt_loras
from modules.presets import PresetStore, apply_preset

log = logging.getLogger(__name__)

#: the warm-up gives up when a single prompt encode takes longer than this
WARM_MAX_ENCODE_S = 2.0


def embedding_key(loaded, te_state: str, prompt: str, negative: str, do_cfg: bool, clip_skip: int) -> CacheKey:
    """The cache key of one prompt pair on ``loaded`` (a :class:`modules.manager.LoadedModel`)."""
    from modules.devices import dtype_name

    return CacheKey(loaded.entry.hash or str(loaded.entry.path), te_state, clip_skip, prompt, negative,
                    options={"family": loaded.family.value, "do_cfg": do_cfg, "dtype": dtype_name(loaded.dtype)})


@dataclass(frozen=True)
class WarmItem:
    key: CacheKey
    prompt: str
    negative: str
    do_cfg: bool
    clip_skip: int


class WarmUp:
    """Queues and runs the warm-up jobs. Built once by the engine; :meth:`start` after each load."""

    def __init__(self, queue: JobQueue, manager, cache: EmbeddingCache, presets: PresetStore,
                 recent_prompts: deque, max_encode_s: float = WARM_MAX_ENCODE_S):
        self.queue = queue
        self.manager = manager
        self.cache = cache
        self.presets = presets
        self.recent_prompts = recent_prompts  # (prompt, negative) as typed, newest last
        self.max_encode_s = max_encode_s
        self._generation = 0  # bumped at each start: an older chain stops at its next job
        self._idle = threading.Event()
        self._idle.set()
        self.closing = threading.Event()

    def start(self, loaded) -> None:
        """Queue the first warm job for ``loaded`` (called by the load job, on the worker thread)."""
        self._generation += 1
        self._idle.clear()
        self._submit(loaded, self._generation, None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the last warm-up chain has ended (True) or ``timeout`` passed (False)."""
        return self._idle.wait(timeout)

    # -- the jobs ------------------------------------------------------------------------------------------
    def _submit(self, loaded, generation: int, items: Iterator[WarmItem] | None) -> None:
        job = self.queue.submit("warm-embeddings", lambda ctx: self._run(loaded, generation, items, ctx),
                                priority=Priority.BACKGROUND)
        if job.finished:  # the queue is stopping: it will not run
            self._end(generation)

    def _stale(self, loaded, generation: int) -> bool:
        return self.closing.is_set() or generation != self._generation or self.manager.current is not loaded

    def _run(self, loaded, generation: int, items: Iterator[WarmItem] | None, ctx: JobContext) -> None:
        """One encode (the next item not cached yet), then queue the rest as the next job."""
        try:
            if items is None:  # planned when the chain first runs: it includes the prompts typed meanwhile
                items = iter(self._plan(loaded))
            item = self._next_uncached(loaded, generation, items)
            if item is None:
                return self._end(generation, "done")
            seconds = self._encode(loaded, item)
        except BaseException:
            self._end(generation, "failed")
            raise
        if seconds > self.max_encode_s:
            return self._end(generation, f"stopped: one encode took {seconds:.1f} s on {self.manager.device}")
        self._submit(loaded, generation, items)

    def _next_uncached(self, loaded, generation: int, items: Iterator[WarmItem]) -> WarmItem | None:
        for item in items:
            if self._stale(loaded, generation):
                return None
            # with a LoRA on the text encoder the keys differ: those are computed on first use instead
            if not self.cache.contains(item.key) and not loaded.backend.text_encoder_state():
                return item
        return None

    def _encode(self, loaded, item: WarmItem) -> float:
        """Compute and store one entry (holding the device lock for this one encode); returns its seconds."""
        with self.manager.lock:
            start = time.perf_counter()
            self.cache.warm([(item.key, lambda: loaded.backend.encode(item.prompt, item.negative, item.do_cfg,
                                                                       item.clip_skip))])
            return time.perf_counter() - start

    def _end(self, generation: int, why: str = "") -> None:
        if why:
            log.info("embedding warm-up %s", why)
        if generation == self._generation:
            self._idle.set()

    def _plan(self, loaded) -> list[WarmItem]:
        """Every preset with an empty prompt and with the recent user prompts (presets with LoRA tags are
        left out: their LoRAs change the embeddings, computed on first use instead)."""
        items = []
        for preset in self.presets.list():
            for user_prompt, user_negative in [("", ""), *reversed(self.recent_prompts)]:
                fields = apply_preset(preset, user_prompt, loaded.family, user_negative)
                prompt, tags = parse_prompt_loras(fields["prompt"])
                if tags:
                    continue
                do_cfg = uses_cfg(loaded.family, fields["cfg_scale"])
                args = (prompt, fields["negative_prompt"], do_cfg, fields["clip_skip"])
                items.append(WarmItem(embedding_key(loaded, "", *args), *args))
        return items
