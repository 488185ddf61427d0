"""Model manager: LRU of parked pipelines, real release on eviction, error state keeps the old model."""
import gc
import weakref
from pathlib import Path

import pytest
import torch

from modules.errors import ModelLoadError
from modules.families import Family
from modules.manager import ModelManager
from modules.registry.entry import ModelEntry


class FakePipe:
    def __init__(self, name):
        self.name = name
        self.device = "cpu"

    def to(self, device):
        self.device = str(device)
        return self

    def set_progress_bar_config(self, **kwargs):
        pass

    @property
    def pipe(self):  # the manager holds backends; this fake is its own pipeline
        return self


def entry(name):
    return ModelEntry(name=name, path=Path(f"/models/{name}"), format="diffusers", family=Family.SD15)


@pytest.fixture
def loads():
    return []


@pytest.fixture
def manager(loads):
    def loader(e, dtype):
        if e.name == "broken":
            raise ModelLoadError("broken.safetensors is truncated")
        loads.append(e.name)
        return FakePipe(e.name)
    return ModelManager(loader, device=torch.device("cpu"), ram_cache=1)


def test_switch_back_uses_ram_cache(manager, loads):
    manager.activate(entry("a"))
    manager.activate(entry("b"))
    manager.activate(entry("a"))  # parked in RAM: no second load
    assert loads == ["a", "b"]
    assert manager.current.entry.name == "a"
    assert manager.status().in_ram == ("b",)


def test_eviction_frees_the_pipeline(manager, loads):
    manager.activate(entry("a"))
    ref = weakref.ref(manager.current.pipe)
    manager.activate(entry("b"))  # a parked
    manager.activate(entry("c"))  # b parked, a evicted (ram_cache=1)
    gc.collect()
    assert ref() is None, "evicted pipeline is still referenced somewhere"
    manager.activate(entry("a"))
    assert loads == ["a", "b", "c", "a"]


def test_failed_load_reports_error_state(manager):
    manager.activate(entry("a"))
    with pytest.raises(ModelLoadError):
        manager.activate(entry("broken"))
    status = manager.status()
    assert status.state == "error" and "truncated" in status.message and "still using a" in status.message
    # the previous model keeps serving
    assert manager.current.entry.name == "a"
    manager.activate(entry("a"))
    assert manager.status().state == "ready"


def test_no_ram_cache_keeps_only_current(loads):
    m = ModelManager(lambda e, d: loads.append(e.name) or FakePipe(e.name), device=torch.device("cpu"), ram_cache=0)
    m.activate(entry("a"))
    m.activate(entry("b"))
    m.activate(entry("a"))
    assert loads == ["a", "b", "a"]
    assert m.status().in_ram == ()
