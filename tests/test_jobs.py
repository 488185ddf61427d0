"""The one queue: FIFO order, positions, interrupt, failures that don't kill the worker, bound."""
import threading
import time

import pytest

from modules.errors import Interrupted, QueueFull
from modules.jobs import JobQueue, JobState


@pytest.fixture
def q():
    queue = JobQueue(max_pending=3)
    queue.start()
    yield queue
    queue.stop()


def test_fifo_order_and_results(q):
    order = []
    jobs = [q.submit("t", lambda ctx, i=i: order.append(i) or i * 10) for i in range(3)]
    assert [j.wait(5) for j in jobs] == [0, 10, 20]
    assert order == [0, 1, 2]
    assert all(j.state == JobState.DONE for j in jobs)


def test_positions_and_bound(q):
    gate = threading.Event()
    first = q.submit("block", lambda ctx: gate.wait(5))
    while q.position(first) != 0:
        time.sleep(0.01)
    waiting = [q.submit("t", lambda ctx: None) for _ in range(3)]
    assert [q.position(j) for j in waiting] == [1, 2, 3]
    with pytest.raises(QueueFull):
        q.submit("t", lambda ctx: None)
    assert len(q) == 4
    gate.set()
    for j in waiting:
        j.wait(5)
    assert q.position(waiting[-1]) == -1


def test_interrupt_stops_running_job_at_next_step(q):
    started = threading.Event()

    def long_job(ctx):
        for step in range(1, 1000):
            ctx.report("denoising", step, 999)
            started.set()
            ctx.check_cancelled()
            time.sleep(0.01)
        return "finished"

    job = q.submit("gen", long_job)
    started.wait(5)
    assert q.interrupt() is True
    with pytest.raises(Interrupted) as info:
        job.wait(5)
    assert job.state == JobState.INTERRUPTED
    assert 0 < info.value.step < 999
    # the worker carries on with the next job
    assert q.submit("t", lambda ctx: "next").wait(5) == "next"


def test_failure_is_reported_and_worker_survives(q):
    def boom(ctx):
        raise MemoryError("simulated out of memory")

    bad = q.submit("gen", boom)
    with pytest.raises(MemoryError):
        bad.wait(5)
    assert bad.state == JobState.FAILED
    assert q.submit("t", lambda ctx: 42).wait(5) == 42


def test_cancelled_before_start_never_runs(q):
    gate = threading.Event()
    ran = []
    q.submit("block", lambda ctx: gate.wait(5))
    queued = q.submit("t", lambda ctx: ran.append(1))
    queued.cancel()
    gate.set()
    with pytest.raises(Interrupted):
        queued.wait(5)
    assert ran == []


def test_expected_errors_log_one_line_unexpected_ones_a_traceback(q, caplog):
    """A typed error (bad input, missing file, LoRA that does not fit) is explained: one log line, no
    traceback. An unexpected exception keeps its traceback for whoever debugs it."""
    import logging

    from modules.errors import MissingComponent

    def expected(ctx):
        raise MissingComponent("face.safetensors is an SDXL LoRA; the model is SD1.5")

    def unexpected(ctx):
        raise KeyError("oops")

    with caplog.at_level(logging.INFO, logger="modules.jobs"):
        for fn in (expected, unexpected):
            job = q.submit("work", fn)
            job.done_event.wait(5)
    typed = [r for r in caplog.records if "SDXL LoRA" in r.getMessage()]
    assert len(typed) == 1 and typed[0].exc_info is None and "\n" not in typed[0].getMessage()
    crashed = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert len(crashed) == 1
