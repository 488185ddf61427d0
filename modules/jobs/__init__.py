"""One queue and one worker thread per device: every generation, model switch, merge and background
warm-up goes through it, whether it comes from the page, the CLI or the API. Torch-free.

A job is a function ``fn(ctx: JobContext) -> result``. The worker runs jobs one at a time, so two
loads, or a load during a generation, can never interleave. Normal jobs run in FIFO order before any
background job (:class:`Priority`), so background work never delays a user for more than one short job,
and no job ever waits for another job: they cannot run at the same time.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Callable

from modules.errors import Interrupted, QueueFull, VisageError

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

    def __init__(self, job_id: int, kind: str, fn: Callable[["JobContext"], Any],
                 priority: "Priority" = None):
        self.id = job_id
        self.kind = kind
        self.fn = fn
        self.priority = Priority.NORMAL if priority is None else priority
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

    def finish_unrun(self) -> None:
        """End a job that will never run (the queue stopped): waiters get :class:`Interrupted`."""
        self.state, self.error = JobState.INTERRUPTED, Interrupted(0, 0)
        self.done_event.set()

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


class Priority(IntEnum):
    """Lower runs first. Background work (the embedding warm-up) runs only when no normal job waits."""

    NORMAL = 0
    BACKGROUND = 10


class JobQueue:
    """A bounded queue with a single worker thread: FIFO within a priority, normal jobs before background ones.

    ``max_pending`` bounds the normal jobs waiting (a full queue raises :class:`QueueFull`); background jobs
    are not counted in ``len()`` or positions, so users never wait behind them for more than the one
    background job that may already be running.
    """

    def __init__(self, max_pending: int = 64, name: str = "visage-worker"):
        self.max_pending = max_pending
        self._cond = threading.Condition()  # guards everything below
        self._pending: dict[Priority, deque[Job]] = {p: deque() for p in Priority}
        self._ids = itertools.count(1)
        self._current: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the normal jobs already queued (within ``timeout``), drop background ones, end the worker."""
        with self._cond:
            self._stopping = True
            dropped = list(self._pending[Priority.BACKGROUND])
            self._pending[Priority.BACKGROUND].clear()
            self._cond.notify_all()
        for job in dropped:
            job.finish_unrun()
        if self._started:
            self._thread.join(timeout)

    def submit(self, kind: str, fn: Callable[[JobContext], Any], *,
               priority: Priority = Priority.NORMAL) -> Job:
        with self._cond:
            waiting = self._pending[priority]
            if priority is Priority.NORMAL and len(waiting) >= self.max_pending:
                raise QueueFull(f"queue is full ({self.max_pending} jobs waiting); try again shortly")
            job = Job(next(self._ids), kind, fn, priority)
            if self._stopping and priority is Priority.BACKGROUND:
                job.finish_unrun()
                return job
            waiting.append(job)
            self._cond.notify()
        return job

    def position(self, job: Job) -> int:
        """0 while running; n >= 1 while queued (1 = runs next among its priority); -1 once finished."""
        with self._cond:
            if job is self._current:
                return 0
            waiting = self._pending[job.priority]
            if job in waiting:
                return waiting.index(job) + 1
        return -1

    def __len__(self) -> int:
        """Normal jobs waiting or running (what a user is queued behind)."""
        with self._cond:
            running = self._current is not None and self._current.priority is Priority.NORMAL
            return len(self._pending[Priority.NORMAL]) + int(running)

    @property
    def current(self) -> Job | None:
        """The running job, background ones included."""
        return self._current

    def interrupt(self) -> bool:
        """Stop the running normal job at its next step. Returns whether one was running."""
        job = self._current
        if job is None or job.priority is not Priority.NORMAL:
            return False
        job.cancel()
        return True

    def _next(self) -> Job | None:
        with self._cond:
            while True:
                for priority in Priority:
                    if self._pending[priority]:
                        self._current = self._pending[priority].popleft()
                        return self._current
                if self._stopping:
                    return None
                self._cond.wait()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            self._execute(job)
            with self._cond:
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
        except VisageError as exc:  # expected and explained: one line, no traceback
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            job.error = exc
            job.state = JobState.FAILED
        except BaseException as exc:  # noqa: BLE001 - a job's failure must never kill the worker
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.error = exc
            job.state = JobState.FAILED
        finally:
            job.progress = Progress("done", job.progress.step, job.progress.total, job.progress.preview)
            job.done_event.set()
