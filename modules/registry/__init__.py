"""Model registry: find checkpoints on disk and identify them from headers/configs. Never loads weights.

Torch-free (also transitively): safe to import from the UI and the CLI.
"""
from modules.registry.entry import ModelEntry, ModelFormat
from modules.registry.hashing import HashCache
from modules.registry.identify import Identification, identify_diffusers, identify_edge_manifest, identify_keys
from modules.registry.registry import ModelRegistry, entry_hash

__all__ = [
    "HashCache", "Identification", "ModelEntry", "ModelFormat", "ModelRegistry", "entry_hash",
    "identify_diffusers", "identify_edge_manifest", "identify_keys",
]
