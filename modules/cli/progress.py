"""Progress on stderr for the commands: a job's phase line, and a one-line stage bar for long operations."""
from __future__ import annotations

import sys
import time


def wait_with_progress(job, label: str):
    """Print a one-line progress bar on stderr while a job runs; return its result (or raise its error)."""
    last = ""
    while not job.finished:
        p = job.progress
        line = f"\r{label}: {p.phase} {p.step}/{p.total}" if p.total else f"\r{label}: {p.phase}"
        if line != last:
            print(line.ljust(50), end="", file=sys.stderr, flush=True)
            last = line
        time.sleep(0.1)
    print(file=sys.stderr)
    return job.wait()


class StageLine:
    """``on_progress(label, done, total)`` for an Operation: ``NAME [done/total] label`` rewritten in place."""

    def __init__(self, name: str, width: int = 60):
        self.name = name
        self.width = width

    def __call__(self, label: str, done: int, total: int) -> None:
        print(f"\r{self.name} [{done}/{total}] {label}".ljust(self.width), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr, flush=True)
