"""TAESD decoders for the diffusers backend: found once per family, loaded on first use, shared by models."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from modules.errors import MissingComponent
from modules.families import Family
from modules.paths import Folders

log = logging.getLogger(__name__)


class TaesdSource:
    """Where TAESD weights are looked for (``models/VAE-approx``, the HF cache) and the decoders loaded so far."""

    def __init__(self, folders: Folders, hf_cache: Path | None):
        self.folders = folders
        self.hf_cache = hf_cache
        self._lock = threading.Lock()
        self._decoders: dict[Family, object] = {}  # family -> modules.taesd.TaeDecoder

    def available(self, family: Family) -> bool:
        from modules.taesd import find_taesd

        return family in self._decoders or find_taesd(family, self.folders, self.hf_cache) is not None

    def missing_message(self, family: Family) -> str:
        from modules.taesd import missing_message

        return missing_message(family, self.folders)

    def decoder(self, family: Family, device, dtype, *, required: bool):
        """The decoder on ``device``/``dtype``; None when the weights are absent and not ``required``
        (previews are then skipped), MissingComponent when they are."""
        from modules.taesd import TaeDecoder, load_taesd

        with self._lock:
            tae = self._decoders.get(family)
            if tae is None:
                try:
                    tae = self._decoders[family] = TaeDecoder(load_taesd(family, self.folders, self.hf_cache))
                except MissingComponent:
                    if required:
                        raise
                    log.warning("live previews need TAESD weights; none found for %s", family.value)
                    return None
        return tae.to(device, dtype)
