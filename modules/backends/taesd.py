"""TAESD decoders for the diffusers backend: found once per family (or fetched the first time they are
needed), loaded on first use, shared by models."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from modules.errors import MissingComponent
from modules.families import Family
from modules.loader.on_demand import HUB, HubStatus
from modules.messages import Message
from modules.paths import Folders

log = logging.getLogger(__name__)

#: ``() -> (on_progress, should_stop)`` of the job running now (the engine's), or None outside a job
JobHooks = Callable[[], "tuple[Callable[[str, int, int], None] | None, Callable[[], bool] | None]"]


def _no_job():
    return None, None


class TaesdSource:
    """Where TAESD weights are looked for (``models/VAE-approx``, the HF cache), whether they can be fetched
    now, and the decoders loaded so far. ``job_hooks`` gives a fetch the running job's progress and cancel."""

    def __init__(self, folders: Folders, hf_cache: Path | None, *, job_hooks: JobHooks = _no_job,
                 hub: HubStatus = HUB):
        self.folders = folders
        self.hf_cache = hf_cache
        self.job_hooks = job_hooks
        self.hub = hub
        self._lock = threading.Lock()
        self._decoders: dict[Family, object] = {}  # family -> modules.taesd.TaeDecoder

    def on_disk(self, family: Family) -> bool:
        from modules.taesd import find_taesd

        return family in self._decoders or find_taesd(family, self.folders, self.hf_cache) is not None

    def available(self, family: Family) -> bool:
        """On disk (or loaded), or fetchable now (the job that needs it fetches it). No network call."""
        return self.on_disk(family) or self.hub.fetchable()

    def missing_message(self, family: Family) -> Message:
        """What is missing, where it goes, which command fetches it, and why it is not fetched now."""
        from modules.taesd import missing_message

        missing = missing_message(family, self.folders)
        reason = self.hub.reason()
        return Message("missing.not_fetched", missing=missing, reason=reason) if reason is not None else missing

    def ensure(self, family: Family) -> Path:
        """The weights' folder, fetched now (with the running job's progress) when absent."""
        from modules.taesd import ensure_taesd

        on_progress, should_stop = self.job_hooks()
        return ensure_taesd(family, self.folders, self.hf_cache, on_progress=on_progress, should_stop=should_stop)

    def decoder(self, family: Family, device, dtype, *, required: bool):
        """The decoder on ``device``/``dtype``; None when the weights are absent, cannot be fetched now and are
        not ``required`` (previews are then skipped, with one log line), MissingComponent when they are."""
        from modules.taesd import TaeDecoder, load_taesd_folder

        with self._lock:
            tae = self._decoders.get(family)
            if tae is None:
                try:
                    tae = self._decoders[family] = TaeDecoder(load_taesd_folder(self.ensure(family)))
                except MissingComponent as exc:
                    if required:
                        raise
                    log.warning("no live previews: %s", exc)
                    return None
        return tae.to(device, dtype)
