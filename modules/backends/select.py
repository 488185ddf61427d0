"""Which backend serves a registry entry, known before loading. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

from modules.backends.base import BackendKind, Capability
from modules.registry.entry import ModelEntry, ModelFormat


@dataclass(frozen=True)
class BackendInfo:
    """What a backend class declares: checked by ``Engine.prepare`` without loading the model."""

    kind: BackendKind
    capabilities: frozenset[Capability]
    runtime_loras: bool


DIFFUSERS = BackendInfo(BackendKind.DIFFUSERS, frozenset({Capability.TXT2IMG, Capability.IMG2IMG, Capability.INPAINT}),
                        runtime_loras=True)
EDGE = BackendInfo(BackendKind.ONNX, frozenset({Capability.TXT2IMG}), runtime_loras=False)


def backend_info(entry: ModelEntry) -> BackendInfo:
    """Edge packages run on ONNX Runtime; every other supported format on diffusers."""
    return EDGE if entry.format == ModelFormat.EDGE else DIFFUSERS
