"""One FIFO queue and one worker thread per device: every generation, model switch and merge
goes through it, whether it comes from the page, the CLI or the API. Torch-free.

A job is a function ``fn(ctx: JobContext) -> result``. The worker runs jobs one at a time, so two
loads, or a load during a generation, can never interleave.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from modules.errors import Interrupted, QueueFull

log = logging.getLogger(__name__)


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass
class Progress:
    phase: str = "queued"  # queued | loading | encoding | denoising | decoding | saving | done
    step: int = 0
    total: int = 0
    preview: Any = None  # a PIL image when a live preview is available
    updated: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class Job:
    """Handle for one queued piece of work; safe to read from any thread."""

    def __init__(self, job_id: int, kind: str, fn: Callable[["JobContext"], Any]):
        self.id = job_id
        self.kind = kind
        self.fn = fn
        self.state = JobState.QUEUED
        self.progress = Progress()
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancel_event = threading.Event()
        self.done_event = threading.Event()
        self.created = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.done_event.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next step (or never start, if still queued)."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends; return its result or raise its error."""
        if not self.done_event.wait(timeout):
            raise TimeoutError(f"job {self.id} still {self.state.value}")
        if self.error is not None:
            raise self.error
        return self.result


class JobContext:
    """What a running job sees: progress reporting and the cancel check."""

    def __init__(self, job: Job):
        self._job = job

    def report(self, phase: str, step: int = 0, total: int = 0, preview: Any = None) -> None:
        p = self._job.progress
        self._job.progress = Progress(phase, step, total, preview if preview is not None else p.preview)

    def check_cancelled(self) -> None:
        if self._job.cancel_event.is_set():
            p = self._job.progress
            raise Interrupted(p.step, p.total)

    @property
    def progress(self) -> Progress:
        return self._job.progress

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()


class JobQueue:
    """Bounded FIFO with a single worker thread."""

    def __init__(self, max_pending: int = 64, name: str = "visage-worker"):
        self.max_pending = max_pending
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending: list[Job] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._current: Job | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)

    def submit(self, kind: str, fn: Callable[[JobContext], Any]) -> Job:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"queue is full ({self.max_pending} jobs waiting); try again shortly")
            job = Job(next(self._ids), kind, fn)
            self._pending.append(job)
        self._queue.put(job)
        return job

    def position(self, job: Job) -> int:
        """0 while running; n >= 1 while queued (1 = runs next); -1 once finished."""
        with self._lock:
            if job is self._current:
                return 0
            if job in self._pending:
                return self._pending.index(job) + 1
        return -1

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + (1 if self._current else 0)

    @property
    def current(self) -> Job | None:
        return self._current

    def interrupt(self) -> bool:
        """Stop the running job at its next step. Returns whether a job was running."""
        job = self._current
        if job is None:
            return False
        job.cancel()
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._pending.remove(job)
                self._current = job
            self._execute(job)
            with self._lock:
                self._current = None

    @staticmethod
    def _execute(job: Job) -> None:
        job.state = JobState.RUNNING
        try:
            if job.cancel_event.is_set():
                raise Interrupted(0, 0)
            job.result = job.fn(JobContext(job))
            job.state = JobState.DONE
        except Interrupted as exc:
            job.error = exc
            job.state = JobState.INTERRUPTED
        except BaseException as exc:  # noqa: BLE001 - a job's failure must never kill the worker
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error = exc
            job.state = JobState.FAILED
        finally:
            job.progress = Progress("done", job.progress.step, job.progress.total, job.progress.preview)
            job.done_event.set()
