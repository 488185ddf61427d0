"""Small pieces fetched from the Hub the first time they are needed: the CLIP tokenizer of single-file
SD1.5/SDXL models (:mod:`modules.loader.tokenizers`) and the TAESD weights (:mod:`modules.taesd`). Torch-free.

Every download goes through :func:`modules.downloads.files.fetch_files` (resumable, checksummed, each file
moved into place atomically). The fetch runs where the need arises: inside the job that needs the piece (on
the worker thread), reporting ``"fetching TAESD (madebyollin/taesd) 1.2/9.8 MB"`` as that job's phase; it
never queues a job of its own (a job must never wait on something that waits for the queue).

Offline (``HF_HUB_OFFLINE``) nothing is tried; a failed fetch is remembered for :data:`RETRY_AFTER_S`, so
:meth:`HubStatus.fetchable` (what ``Engine.prepare`` asks per request) never touches the network. Either way
the caller gets one :class:`~modules.errors.MissingComponent` sentence: what is missing, where it goes, which
command fetches it, and why it was not fetched now.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modules.errors import DownloadError, MissingComponent
from modules.messages import Message

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
#: after the Hub could not be reached, requests are told "not fetchable" for this long (then tried again)
RETRY_AFTER_S = 300.0
#: DownloadError keys that mean "the Hub is not reachable from here" (not: this file is missing or gated)
UNREACHABLE_KEYS = frozenset({"download.unreachable", "download.connection_lost", "download.offline"})


@dataclass(frozen=True)
class Piece:
    """A small thing fetched on demand: ``label`` is said in the job's phase ("TAESD", "CLIP tokenizer")."""

    label: str
    repo_id: str
    files: tuple[str, ...]
    command: str  # the CLI command that fetches it by hand (said when it cannot be fetched now)


class HubStatus:
    """Whether a fetch may be tried now: not offline, and no failure to reach the Hub in the last
    :data:`RETRY_AFTER_S` seconds. Decided without a network call."""

    def __init__(self, retry_after_s: float = RETRY_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failed_at: float | None = None
        self._reason: Message | str | None = None

    def fetchable(self) -> bool:
        return self.reason() is None

    def reason(self) -> Message | str | None:
        """Why nothing is fetched now (offline, or the last failure), or None when a fetch may be tried."""
        from modules.downloads.hub import offline

        if offline():
            return Message("missing.offline")
        with self._lock:
            if self._failed_at is not None and self._clock() - self._failed_at < self.retry_after_s:
                return self._reason
        return None

    def failed(self, reason: Message | str) -> None:
        with self._lock:
            self._failed_at, self._reason = self._clock(), reason

    def succeeded(self) -> None:
        with self._lock:
            self._failed_at = self._reason = None


#: one per process: the Hub is reachable or not for every engine alike
HUB = HubStatus()


def fetch_phase(piece: Piece, done: int, total: int) -> Message:
    """The job phase shown while ``piece`` downloads: ``"fetching TAESD (madebyollin/taesd) 1.2/9.8 MB"``
    (keyed: the page says it in its language)."""
    return Message("progress.fetching", what=piece.label, repo=piece.repo_id, done=f"{done / 1e6:.1f}",
                   total=f"{total / 1e6:.1f}")


def fetch_piece(piece: Piece, dest: Path, missing: Message, *, on_progress: ProgressCallback | None = None,
                should_stop: Callable[[], bool] | None = None, hub: HubStatus = HUB) -> list[Path]:
    """Fetch ``piece.files`` into ``dest`` (kept as they are in the repo); return their paths.

    ``missing``: the sentence saying what is missing and where it goes. MissingComponent
    (``missing.not_fetched``: that sentence and why) when offline or when the download fails;
    Interrupted when ``should_stop()`` turns true (the part files stay and the next fetch resumes them)."""
    from modules.downloads.files import fetch_files

    reason = hub.reason()
    if reason is not None:
        raise MissingComponent(Message("missing.not_fetched", missing=missing, reason=reason))

    def report(_label: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(fetch_phase(piece, done, total), done, total)

    log.info("fetching %s (%s) into %s", piece.label, piece.repo_id, dest)
    if on_progress is not None:
        on_progress(fetch_phase(piece, 0, 0), 0, 0)
    try:
        paths = fetch_files(piece.repo_id, list(piece.files), Path(dest), on_progress=report,
                            should_stop=should_stop, command=piece.command)
    except DownloadError as exc:
        why = exc.message or str(exc)
        if exc.key in UNREACHABLE_KEYS:
            hub.failed(why)
        raise MissingComponent(Message("missing.not_fetched", missing=missing, reason=why)) from exc
    hub.succeeded()
    return paths
