"""The long-operation skeleton (modules/operations.py): stages in order, cooperative cancel, atomic output."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modules import atomic
from modules.errors import Interrupted, InvalidRequest
from modules.jobs import JobQueue
from modules.operations import Operation
from modules.lora.merge import MergeError as WriteFailed  # a real typed error a write failure becomes


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_stages_are_reported_in_order_with_fractions():
    seen = []
    op = Operation(("one", "two", "three"), on_progress=lambda *r: seen.append(r))
    assert [op.stage() for _ in range(3)] == ["one", "two", "three"]
    op.report("three 1/2")  # finer progress inside a stage
    op.finish()
    assert seen == [("one", 0, 3), ("two", 1, 3), ("three", 2, 3), ("three 1/2", 3, 3), ("done", 3, 3)]
    assert op.progress().fraction == 1.0
    with pytest.raises(IndexError):
        op.stage()


def test_for_job_reports_through_the_job_and_stops_when_it_is_cancelled():
    queue = JobQueue()
    queue.start()
    phases = []

    def body(ctx):
        op = Operation.for_job(ctx, ("a", "b"), prefix="merging: ")
        op.stage()
        phases.append((ctx.progress.phase, ctx.progress.step, ctx.progress.total))
        ctx._job.cancel()
        op.stage()  # the cancel point
        phases.append("not reached")

    job = queue.submit("op", body)
    with pytest.raises(Interrupted):
        job.wait(10)
    queue.stop()
    assert phases == [("merging: a", 0, 2)]


def test_cancel_between_stages_leaves_no_output_and_no_temp(tmp_path):
    final = tmp_path / "out"
    stop = {"now": False}
    op = Operation(("write", "check"), should_stop=lambda: stop["now"])
    with pytest.raises(Interrupted) as info:
        with op.output(final, folder=True) as temp:
            op.stage()
            (temp / "part").write_text("half of it")
            stop["now"] = True
            op.stage()  # stops here
    assert (info.value.step, info.value.total) == (1, 2)
    assert not final.exists() and leftovers(tmp_path) == []


def test_cancel_after_writing_discards_the_output_before_the_swap(tmp_path):
    final = tmp_path / "model.bin"
    final.write_text("old")
    stop = {"now": False}
    held = []

    def before_swap(temp):  # the test's pause: the output is complete under its temp name
        held.append(temp.read_text())
        stop["now"] = True

    op = Operation(1, should_stop=lambda: stop["now"])
    with pytest.raises(Interrupted):
        with op.output(final, overwrite=True, before_swap=before_swap) as temp:
            op.stage("write")
            temp.write_text("new")
    assert held == ["new"]
    assert final.read_text() == "old" and leftovers(tmp_path) == []


def test_output_swaps_in_and_replaces_an_old_folder(tmp_path):
    final = tmp_path / "pkg"
    final.mkdir()
    (final / "a").write_text("old")
    op = Operation(("write",))
    with op.output(final, folder=True, overwrite=True) as temp:
        op.stage()
        (temp / "a").write_text("new")
    assert (final / "a").read_text() == "new" and leftovers(tmp_path) == []
    with pytest.raises(InvalidRequest, match="already exists"):
        with op.output(final, folder=True) as temp:
            (temp / "a").write_text("newer")
    assert (final / "a").read_text() == "new" and leftovers(tmp_path) == []


def test_a_failed_swap_rolls_back_to_the_old_output(tmp_path, monkeypatch):
    final = tmp_path / "pkg"
    final.mkdir()
    (final / "a").write_text("old")
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(final) and ".write.tmp" in os.fspath(src):
            raise OSError(28, "No space left on device")  # the new output cannot take the old one's place
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    op = Operation(("write",))
    with pytest.raises(WriteFailed, match="could not write pkg: No space left on device"):
        with op.output(final, folder=True, overwrite=True, error=WriteFailed) as temp:
            op.stage()
            (temp / "a").write_text("new")
    assert (final / "a").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_stale_temps_of_a_dead_process_are_removed_first(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout)
    final = tmp_path / "m.safetensors"
    stale = tmp_path / f".m.safetensors.{dead_pid}.merge.tmp"
    stale.write_text("x")
    with Operation(1).output(final, tag="merge") as temp:
        temp.write_text("merged")
    assert final.read_text() == "merged" and leftovers(tmp_path) == []
