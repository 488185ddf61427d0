"""Model manager: which pipeline is on the device, which are parked in CPU RAM, and one lock.

Identify (modules.registry) -> load (modules.loader) -> run (modules.generation): this module only
decides *where* loaded pipelines live. One pipeline sits on the device; up to ``ram_cache`` recently
used ones wait in CPU RAM (LRU) so switching back is fast. Evicted pipelines are freed for real.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from modules.devices import dtype_name, empty_device_cache, resolve_dtype
from modules.errors import NotReady
from modules.families import Family
from modules.registry.entry import ModelEntry
from modules.states import ModelState

log = logging.getLogger(__name__)

#: (entry, dtype) -> a backend (modules.backends) holding the model on the CPU; it must have ``to(device)``
LoaderFn = Callable[[ModelEntry, torch.dtype], object]


@dataclass
class LoadedModel:
    entry: ModelEntry
    backend: object  # modules.backends.base.Backend, chosen when the model loaded
    family: Family
    dtype: torch.dtype
    load_seconds: float = 0.0

    @property
    def key(self) -> str:
        return str(self.entry.path)

    @property
    def pipe(self):
        """The backend's pipeline (diffusers pipeline or EdgePipeline)."""
        return self.backend.pipe


@dataclass(frozen=True)
class ManagerStatus:
    state: ModelState
    model: str | None
    family: str | None
    message: str
    device: str
    dtype: str
    in_ram: tuple[str, ...]


def release_memory(device: torch.device) -> None:
    """Return freed memory to the OS: Python objects, the CUDA cache, and glibc's heap."""
    gc.collect()
    empty_device_cache(device)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc (macOS, musl): nothing to trim
        pass


class ModelManager:
    def __init__(self, loader: LoaderFn, *, device: torch.device, dtype: str = "auto", ram_cache: int = 2):
        self._loader = loader
        self.device = device
        self._dtype_setting = dtype
        self.ram_cache = ram_cache
        self.lock = threading.RLock()  # held for every load and every generation
        self._current: LoadedModel | None = None
        self._parked: OrderedDict[str, LoadedModel] = OrderedDict()
        self._state = ModelState.IDLE
        self._message = ""

    # -- queries -----------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def require_current(self) -> LoadedModel:
        if self._current is None:
            raise NotReady(self._message or "no model is loaded yet")
        return self._current

    def status(self) -> ManagerStatus:
        cur = self._current
        dtype = dtype_name(cur.dtype) if cur else self._dtype_setting
        return ManagerStatus(
            state=self._state, model=cur.entry.title if cur else None,
            family=cur.family.value if cur else None, message=self._message,
            device=str(self.device), dtype=dtype,
            in_ram=tuple(m.entry.title for m in self._parked.values()),
        )

    def mark_loading(self, message: str) -> None:
        """Called when a load is queued, so the page says 'loading…' before the worker gets to it."""
        self._state, self._message = ModelState.LOADING, message

    # -- switching ---------------------------------------------------------------------------
    def activate(self, entry: ModelEntry, on_phase: Callable[[str], None] | None = None) -> LoadedModel:
        """Make ``entry`` the model on the device: from the RAM cache when parked, else from disk."""
        with self.lock:
            if self._current is not None and self._current.key == str(entry.path):
                self._state, self._message = ModelState.READY, ""
                return self._current
            self._state, self._message = ModelState.LOADING, f"loading {entry.name}"
            try:
                loaded = self._parked.pop(str(entry.path), None)
                if on_phase:
                    on_phase("switching" if loaded else "loading")
                if loaded is None:
                    loaded = self._load(entry)  # on the CPU; a failure here leaves the current model serving
                self._park_current()
                loaded.backend.to(self.device)
                self._current = loaded
            except Exception as exc:
                still = f" (still using {self._current.entry.name})" if self._current else ""
                self._state, self._message = ModelState.ERROR, f"{exc}{still}"
                raise
            self._state, self._message = ModelState.READY, ""
            return loaded

    def unload_all(self) -> None:
        with self.lock:
            self._current = None
            self._parked.clear()
            self._state, self._message = ModelState.IDLE, ""
            release_memory(self.device)

    def _load(self, entry: ModelEntry) -> LoadedModel:
        dtype = resolve_dtype(self._dtype_setting, self.device, entry.family)
        start = time.perf_counter()
        backend = self._loader(entry, dtype)
        seconds = time.perf_counter() - start
        log.info("loaded %s in %.2f s", entry.name, seconds)
        return LoadedModel(entry=entry, backend=backend, family=entry.family, dtype=dtype, load_seconds=seconds)

    def _park_current(self) -> None:
        """Move the current model to CPU RAM (LRU) and free what falls out of the cache."""
        cur, self._current = self._current, None
        if cur is None:
            return
        evicted = self.ram_cache == 0
        if not evicted:
            if self.device.type != "cpu":
                cur.backend.to("cpu")
                evicted = True  # device memory was freed: give it back to the driver
            self._parked[cur.key] = cur
        del cur
        while len(self._parked) > self.ram_cache:
            self._parked.popitem(last=False)
            evicted = True
        if evicted:  # a full collection + heap trim costs ~0.1-0.3 s with GBs resident: only when useful
            release_memory(self.device)
