"""The skeleton of a long operation (LoRA merge, edge build, model download). Torch-free.

An :class:`Operation` runs named stages in order. Each :meth:`~Operation.stage` first honours a stop
request (cooperative cancel: :class:`~modules.errors.Interrupted`, raised between stages), then reports
``(label, done, total)`` through ``on_progress`` (a job's ``ctx.report``: the label is the job's phase, the
fraction is ``done / total``). Within a stage, :meth:`~Operation.report` passes finer progress (bytes,
distillation steps) and :meth:`~Operation.check` is the cancel point.

:meth:`~Operation.output` writes the operation's one result through :func:`modules.atomic.atomic_output`
(hidden temp beside the final path -> swap -> rollback; stale temps of dead processes removed first). A
stop request seen after the output is written but before it is swapped in discards it: a cancelled
operation leaves neither an output nor a temp. ``before_swap`` (a last check, or a test's pause) runs
just before that final cancel check.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modules.atomic import atomic_output
from modules.errors import Interrupted, InvalidRequest, VisageError
from modules.messages import Message

#: ``on_progress(label, done, total)``: a job's ``JobContext.report`` has this shape
ProgressCallback = Callable[[str, int, int], None]
DONE = "done"


@dataclass(frozen=True)
class StageProgress:
    """One progress report: the stage's label and how far the operation is."""

    label: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class Operation:
    """Named stages with progress, cooperative cancel and one atomic output.

    ``stages``: the labels in order (their number is the progress total), or just how many there are
    when labels are built as the operation goes (``total`` may also be changed later, e.g. once a
    merge knows how many distinct LoRAs it has). ``on_stage(label)``: a hook called as each stage
    starts, after the cancel check (tests use it to stop or fail at a chosen point).
    """

    def __init__(self, stages: Sequence[str] | int, *, on_progress: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None, on_stage: Callable[[str], None] | None = None):
        self.stages = tuple(stages) if not isinstance(stages, int) else ()
        self.total = len(self.stages) if not isinstance(stages, int) else int(stages)
        self.done = 0
        self.current: str | None = None
        self._on_progress = on_progress
        self._should_stop = should_stop
        self._on_stage = on_stage

    @classmethod
    def for_job(cls, ctx, stages: Sequence[str] | int, *, prefix: str = "", **kwargs) -> "Operation":
        """An operation reporting to a job (``ctx``: :class:`modules.jobs.JobContext`), its labels
        prefixed with ``prefix``; it stops when the job is cancelled."""
        def report(label: str, done: int, total: int) -> None:
            ctx.report(f"{prefix}{label}", done, total)

        return cls(stages, on_progress=report, should_stop=lambda: ctx.cancelled, **kwargs)

    # -- progress and cancel ----------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._should_stop is not None and bool(self._should_stop())

    def check(self) -> None:
        """The cancel point: :class:`Interrupted` (at the current stage) when a stop was asked for."""
        if self.stopping:
            raise Interrupted(self.done, self.total)

    def stage(self, label: str | None = None) -> str:
        """Start the next stage (``label`` defaults to the next of ``stages``); returns its label."""
        if label is None:
            if self.done >= len(self.stages):
                raise IndexError(f"no stage {self.done + 1} of {len(self.stages)}")
            label = self.stages[self.done]
        if self.stopping:
            raise Interrupted(self.done, self.total)
        self.current = label
        if self._on_stage is not None:
            self._on_stage(label)
        self.report(label, self.done, self.total)
        self.done += 1
        return label

    def report(self, label: str, done: int | None = None, total: int | None = None) -> None:
        """Progress inside a stage (default: the operation's own counts)."""
        if self._on_progress is not None:
            self._on_progress(label, self.done if done is None else done, self.total if total is None else total)

    def finish(self) -> None:
        """Report the end: ``("done", total, total)``."""
        self.done = max(self.done, self.total)
        self.current = DONE
        self.report(DONE, self.total, self.total)

    def progress(self) -> StageProgress:
        return StageProgress(self.current or "", self.done, self.total)

    # -- output -----------------------------------------------------------------------------------
    @contextmanager
    def output(self, final: str | os.PathLike, *, folder: bool = False, overwrite: bool = False,
               tag: str = "write", before_swap: Callable[[Path], None] | None = None,
               error: Callable[[str], VisageError] | None = None) -> Iterator[Path]:
        """Write the result under a temp path (yielded), then swap it into ``final`` atomically.

        A stop request after the block (checked after ``before_swap``) discards the temp. ``error``:
        the typed error an OSError becomes (``error(message)``); without it, OSError passes through. ``final``
        existing without ``overwrite`` is InvalidRequest("out")."""
        final = Path(final)

        def last_check(temp: Path) -> None:
            if before_swap is not None:
                before_swap(temp)
            self.check()

        try:
            with atomic_output(final, tag=tag, folder=folder, overwrite=overwrite, before_swap=last_check) as temp:
                yield temp
        except FileExistsError:  # it appeared while this operation ran
            raise InvalidRequest("out", Message("rule.exists", name=final.name)) from None
        except OSError as exc:
            if error is None:
                raise
            raise error(f"could not write {final.name}: {exc.strerror or exc}") from exc
